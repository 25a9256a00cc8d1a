"""The console's acceptance test, in a real headless Chromium against a real server (kernel + HTTP transport +
console, the testkit pack), with a real MCP client (the `mcp` SDK over Streamable HTTP) using the key the
browser created. One story, each step asserted:

 1. an admin signs in through the form (typing, Enter);
 2. creates a key with the form (the keyboard submits it) and reads it once: it is on that page only;
 3. an MCP client lists the tools and calls `echo` with it;
 4. the Keys page then shows the key's last use;
 5. an approval-gated call with a secret-looking argument waits for approval; the Approvals page shows the
    tool, the key and the masked arguments; approved there, the client's identical call runs exactly once;
 6. revoked on the Keys page (after the confirmation), the key is refused with 401;
 7. the Calls page shows the calls with their outcomes, and filters by tool;
 8. a brand-admin of another brand sees none of it, and is refused another brand's page;
 9. an auditor sees but cannot change anything, even with a forged request from the page;
10. every form control on every page has a label, a field's error is tied to its field, and at 390 px the
    pages do not scroll sideways and the navigation works;
11. screenshots of every page (and, with QAQNUZ_UPDATE_DOCS_SCREENSHOT=1, docs/keys.png for the README).

The gated tool is the testkit's `deploy` (approval turned on for acme here): `create_order`'s schema takes
only `sku` and `qty`, so it cannot carry a credential-looking argument to mask.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from anyio.from_thread import BlockingPortal, start_blocking_portal
from conftest import PASSWORD, Server, console_config
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from browser import open_browser, require_chromium, screenshot

WAIT = 20.0
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "keys.png"
SECRET_ARGUMENT = "tok-123-secret"
DEPLOY_ARGS = {"target": "prod", "api_token": SECRET_ARGUMENT, "notes": "release 1.4"}
PAGES = ("keys", "approvals", "calls", "tools", "connect", "status")

#: Visible form controls without a label (by <label>, aria-label or aria-labelledby), as outerHTML.
UNLABELLED_JS = """
return Array.from(document.querySelectorAll("input, select, textarea")).filter((el) => {
  if (el.type === "hidden") return false;
  const style = getComputedStyle(el);
  if (el.closest("[hidden]") || style.display === "none" || style.visibility === "hidden") return false;
  if (el.getClientRects().length === 0) return false;
  const named = (el.labels && Array.from(el.labels).some((l) => l.textContent.trim()))
    || (el.getAttribute("aria-label") || "").trim() || el.getAttribute("aria-labelledby");
  return !named;
}).map((el) => el.outerHTML);
"""
OVERFLOW_JS = "return [document.documentElement.scrollWidth, window.innerWidth];"
#: The outermost elements that reach past the right edge of the viewport (for the failure message).
OVERFLOWING_JS = """
const width = window.innerWidth;
return Array.from(document.body.querySelectorAll("*"))
  .filter((el) => el.getBoundingClientRect().right > width + 1 && !el.closest(".scroll"))
  .filter((el) => !(el.parentElement && el.parentElement.getBoundingClientRect().right > width + 1))
  .map((el) => `${el.outerHTML.slice(0, 160)} right=${el.getBoundingClientRect().right}`);
"""
FORGED_POST_JS = """
const [path, body, done] = arguments;
fetch("/console/api/me")
  .then((me) => me.json())
  .then((me) => fetch(path, {method: "POST", body: body === null ? undefined : JSON.stringify(body),
                             headers: {"x-csrf-token": me.csrf_token, "content-type": "application/json"}}))
  .then((answer) => answer.text().then((text) => done([answer.status, text])))
  .catch((error) => done([0, String(error)]));
"""


def server_config() -> str:
    """The console over the testkit, with last use flushed every second and `deploy` gated in acme."""
    text = console_config()
    text = text.replace('sync_interval = "5s"\n', 'sync_interval = "5s"\nlast_used_flush = "1s"\n', 1)
    text = text.replace("[brands.acme]\n", "[brands.acme]\ntools.deploy = { exposable = true, approval = true }\n", 1)
    assert "last_used_flush" in text and "tools.deploy" in text
    return text


# -- browser helpers ---------------------------------------------------------------------------------------
def wait(driver: WebDriver, timeout: float = WAIT, poll: float = 0.1) -> WebDriverWait[WebDriver]:
    """A wait that polls through page loads (an element gone stale or not there yet is tried again)."""
    return WebDriverWait(driver, timeout, poll_frequency=poll,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))  # fmt: skip


def open_page(driver: WebDriver, server: Server, page: str) -> None:
    driver.get(f"{server.console}/{page}")
    wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "main h1")))


def h1(driver: WebDriver) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, "main h1").text)


def sign_in(driver: WebDriver, server: Server, name: str) -> None:
    driver.get(f"{server.console}/login")
    field = wait(driver).until(EC.element_to_be_clickable((By.ID, "name")))
    field.send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD, Keys.ENTER)
    wait(driver).until(EC.presence_of_element_located((By.CSS_SELECTOR, "nav[aria-label='Console sections']")))
    assert driver.current_url == f"{server.console}/keys"
    assert name in driver.find_element(By.CSS_SELECTOR, ".who").text


def sign_out(driver: WebDriver, server: Server) -> None:
    driver.find_element(By.CSS_SELECTOR, "form.signout button[type=submit]").click()
    wait(driver).until(EC.url_to_be(f"{server.console}/login"))
    wait(driver).until(EC.presence_of_element_located((By.ID, "password")))


def key_row(driver: WebDriver, key_id: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'#keys tr[data-key-id="{key_id}"]')


def calls_table(driver: WebDriver) -> list[tuple[str, str, str, str]]:
    """(brand, key id, tool, outcome) of each row of the Calls table."""
    rows = []
    for row in driver.find_elements(By.CSS_SELECTOR, "#calls tbody tr"):
        cells = [c.text.strip() for c in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) == 9:
            rows.append((cells[1], cells[2], cells[3], cells[4]))
    return rows


def assert_labelled(driver: WebDriver, where: str) -> None:
    missing = driver.execute_script(UNLABELLED_JS)
    assert missing == [], f"{where}: form controls without a label: {missing}"
    for control in driver.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), select, textarea"):
        if control.is_displayed():
            assert control.accessible_name.strip(), f"{where}: no accessible name for {control.get_attribute('id')}"


def assert_no_page_overflow(driver: WebDriver, where: str) -> None:
    scroll_width, inner_width = driver.execute_script(OVERFLOW_JS)
    if scroll_width > inner_width + 1:
        offenders = driver.execute_script(OVERFLOWING_JS)
        raise AssertionError(f"{where}: the page scrolls sideways ({scroll_width} > {inner_width}): {offenders}")


def forged_post(driver: WebDriver, path: str, body: dict[str, Any] | None) -> tuple[int, str]:
    """A state-changing request made by script from the signed-in page, with the session's own CSRF token."""
    driver.set_script_timeout(WAIT)
    status, text = driver.execute_async_script(FORGED_POST_JS, path, body)
    return int(status), str(text)


# -- MCP client helpers --------------------------------------------------------------------------------------
@asynccontextmanager
async def mcp_client(url: str, key: str) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client


def call(portal: BlockingPortal, client: Client, tool: str, arguments: dict[str, Any]) -> Any:
    async def go() -> Any:
        with anyio.fail_after(WAIT):
            return await client.call_tool(tool, arguments)

    return portal.call(go)


def audit_lines(server: Server) -> list[dict[str, Any]]:
    text = (server.folder / "qaqnuz-audit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def executions(server: Server) -> list[str]:
    counter = server.folder / "testkit-executions.txt"
    return counter.read_text().splitlines() if counter.exists() else []


def mcp_status(server: Server, key: str) -> int:
    """The HTTP status of a plain `initialize` POST to /mcp with the key."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "probe", "version": "1"}}}  # fmt: skip
    headers = {"authorization": f"Bearer {key}", "accept": "application/json, text/event-stream"}
    return httpx.post(server.mcp, json=body, headers=headers, timeout=10).status_code


# -- the story ---------------------------------------------------------------------------------------------
def test_the_console_end_to_end_in_a_real_browser(console_server: Callable[..., Server]) -> None:
    require_chromium()
    server = console_server(server_config())
    server.add_user("ada", "admin")
    server.add_user("mo", "admin")  # the phone-sized browser's own session (signing out ends a user's sessions)
    server.add_user("gus", "brand-admin", "globex")
    server.add_user("audrey", "auditor")
    server.mint("billing-service", role="viewer")
    server.mint("ci-pipeline")
    server.mint("globex-crm", brand="globex")
    globex_keys = [k.key_id for k in server.run(server.kernel.keys.list("globex"))]

    with open_browser(1280, 900) as driver:
        # 10 (login). The sign-in page: every field labelled.
        open_page(driver, server, "login")
        assert h1(driver) == "Sign in"
        assert_labelled(driver, "login")
        screenshot(driver, "console-1280-login")

        # 1. Sign in as admin through the form: type the name and password, press Enter.
        sign_in(driver, server, "ada")
        assert h1(driver) == "Keys of acme"
        assert driver.find_element(By.CSS_SELECTOR, "nav a[aria-current=page]").text == "Keys"

        # 10 (field errors). An empty name is refused next to the name field, tied to it for screen readers.
        driver.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]").click()
        error = wait(driver).until(EC.visibility_of_element_located((By.ID, "key-name-error")))
        assert "Name the key" in error.text
        name_field = driver.find_element(By.ID, "key-name")
        assert name_field.get_attribute("aria-invalid") == "true"
        assert name_field.get_attribute("aria-describedby") == "key-name-error"
        assert_labelled(driver, "keys with an error")
        screenshot(driver, "console-1280-keys-name-error")

        # 2. Create a key with the form; the keyboard submits it (Tab to the button, Enter).
        name_field = driver.find_element(By.ID, "key-name")
        name_field.clear()
        name_field.send_keys("laptop-agent")
        Select(driver.find_element(By.ID, "key-role")).select_by_value("manager")
        boxes = driver.find_elements(By.CSS_SELECTOR, "#key-scopes input[name=scopes]")
        shown = [box for box in boxes if box.is_displayed()]
        assert sorted(str(box.get_attribute("value")) for box in shown) == ["orders.read", "orders.write"]
        for box in shown:
            if not box.is_selected():
                box.click()
        lifetime = driver.find_element(By.ID, "key-expires")
        lifetime.clear()
        lifetime.send_keys("30d", Keys.TAB)
        submit = driver.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]")
        assert driver.switch_to.active_element == submit, "Tab from the lifetime reaches the submit button"
        submit.send_keys(Keys.ENTER)
        new_key = wait(driver).until(EC.visibility_of_element_located((By.ID, "new-key")))
        key = str(new_key.get_attribute("value"))
        key_id = driver.find_element(By.ID, "new-key-id").text.strip()
        assert key.startswith("qx_live_") and key_id
        assert "only time it is shown" in driver.page_source
        assert "Key created: laptop-agent (acme, manager)" in driver.find_element(By.ID, "once-heading").text
        assert key in driver.find_element(By.ID, "claude-code").text  # the settings carry it, ready to paste
        assert_labelled(driver, "connect with the new key")
        screenshot(driver, "console-1280-connect-new-key")
        record = next(k for k in server.run(server.kernel.keys.list("acme")) if k.key_id == key_id)
        assert (record.name, record.role, sorted(record.scopes)) == ("laptop-agent", "manager",
                                                                     ["orders.read", "orders.write"])  # fmt: skip
        assert record.expires_at is not None and 29.9 * 86_400 < record.expires_at - record.created_at <= 30 * 86_400
        # Shown once: no other page, nor the Keys page that lists it, carries the raw key.
        for page in PAGES:
            open_page(driver, server, page)
            assert key not in driver.page_source, page
        open_page(driver, server, "keys")
        assert key_row(driver, key_id).find_element(By.CSS_SELECTOR, ".last-used").text == "—"

        with start_blocking_portal() as portal:
            with portal.wrap_async_context_manager(mcp_client(server.mcp, key)) as client:
                # 3. An MCP client uses the key: lists the tools, calls echo.
                listed = portal.call(client.list_tools)
                names = {tool.name for tool in listed.tools}
                assert {"echo", "deploy", "create_order", "write_tool"} <= names
                echoed = call(portal, client, "echo", {"message": "hello from the SDK"})
                assert echoed.is_error is False
                assert echoed.structured_content["data"] == {"message": "hello from the SDK", "times": 1}

                # 4. The Keys page shows its last use (flushed every second: reload until it is there).
                def last_used(d: WebDriver) -> str | bool:
                    open_page(d, server, "keys")
                    text = str(key_row(d, key_id).find_element(By.CSS_SELECTOR, ".last-used").text).strip()
                    return text if text not in ("", "—") else False

                shown_use = wait(driver, 30, poll=0.25).until(last_used)
                assert str(shown_use).endswith("UTC")
                assert key_row(driver, key_id).find_element(By.CSS_SELECTOR, ".state").text == "active"
                assert_labelled(driver, "keys")
                screenshot(driver, "console-1280-keys")
                if os.environ.get("QAQNUZ_UPDATE_DOCS_SCREENSHOT") == "1":
                    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                    assert driver.save_screenshot(str(DOCS_SCREENSHOT))

                # 5. A gated call with a credential-looking argument waits for a person.
                first = call(portal, client, "deploy", DEPLOY_ARGS)
                assert first.is_error and first.structured_content["error_class"] == "permission"
                approval_id = first.structured_content["approval_id"]
                assert approval_id.startswith("apr_") and "requires approval" in first.content[0].text
                assert executions(server) == []
                open_page(driver, server, "approvals")
                card = driver.find_element(By.ID, f"approval-{approval_id}")
                heading = card.find_element(By.TAG_NAME, "h3").text
                assert "deploy" in heading and "laptop-agent" in heading and "pending" in heading
                assert key_id in card.find_element(By.TAG_NAME, "dl").text
                arguments = json.loads(card.find_element(By.CSS_SELECTOR, "pre.arguments").text)
                assert arguments == {"target": "prod", "api_token": "***", "notes": "release 1.4"}
                assert SECRET_ARGUMENT not in driver.page_source
                assert_labelled(driver, "approvals")
                screenshot(driver, "console-1280-approvals-pending")
                card.find_element(By.ID, f"reason-{approval_id}").send_keys("release window, checked with ops")
                card.find_element(By.CSS_SELECTOR, "button[name=decision][value=approve]").click()
                notice = wait(driver).until(EC.visibility_of_element_located((By.CSS_SELECTOR, "main .notice")))
                assert approval_id in notice.text and "decided" in notice.text
                # Approved and not yet used, it stays listed as approved, with nothing left to decide.
                card = driver.find_element(By.ID, f"approval-{approval_id}")
                assert "approved" in card.find_element(By.TAG_NAME, "h3").text
                assert not card.find_elements(By.CSS_SELECTOR, "form.decide, button")
                assert executions(server) == []  # approving runs nothing by itself

                # ...the client's identical call now runs, once: the next two identical calls ask anew.
                done = call(portal, client, "deploy", DEPLOY_ARGS)
                assert done.is_error is False and done.structured_content["data"] == {"deployed": "prod"}
                again = [call(portal, client, "deploy", DEPLOY_ARGS) for _ in range(2)]
                for answer in again:
                    assert answer.is_error and answer.structured_content["approval_id"] != approval_id
                assert executions(server) == ["deploy:prod"]
                ran = [line for line in audit_lines(server)
                       if line.get("tool") == "deploy" and line.get("outcome") == "executed"]  # fmt: skip
                assert len(ran) == 1 and ran[0].get("approval_id") == approval_id
                open_page(driver, server, "approvals")
                history = driver.find_element(By.ID, "approval-history").text
                row = next(line for line in history.splitlines() if approval_id in line)
                assert "consumed" in row and "console:ada" in row and "release window" in row

                # 6. Revoke the key on the Keys page, after the confirmation.
                open_page(driver, server, "keys")
                revoke = key_row(driver, key_id).find_element(By.CSS_SELECTOR, "button.danger")
                assert revoke.accessible_name == "Revoke key laptop-agent"
                revoke.click()
                alert = wait(driver).until(EC.alert_is_present())
                assert "Revoke key laptop-agent?" in alert.text
                alert.accept()
                wait(driver).until(
                    lambda d: key_row(d, key_id).find_element(By.CSS_SELECTOR, ".state").text == "revoked"
                )
                assert not key_row(driver, key_id).find_elements(By.CSS_SELECTOR, "button")
                assert mcp_status(server, key) == 401

                async def refused() -> MCPError | None:
                    try:
                        with anyio.fail_after(WAIT):
                            await client.call_tool("echo", {"message": "after revocation"})
                    except MCPError as exc:  # the SDK's answer to the HTTP 401 on its session
                        return exc
                    return None

                failure = portal.call(refused)
                assert failure is not None, "the client's next call with the revoked key must fail"
                assert executions(server) == ["deploy:prod"]

        # 7. The Calls page shows the calls with their outcomes; filtering by tool works.
        open_page(driver, server, "calls")
        rows = calls_table(driver)
        mine = [(tool, outcome) for brand, kid, tool, outcome in rows if kid == key_id]
        assert ("echo", "executed") in mine
        assert ("deploy", "approval_requested") in mine and mine.count(("deploy", "executed")) == 1
        assert "Audit chain intact" in driver.find_element(By.ID, "chain").text
        assert_labelled(driver, "calls")
        screenshot(driver, "console-1280-calls")
        tool_filter = driver.find_element(By.ID, "f-tool")
        tool_filter.send_keys("echo", Keys.ENTER)
        wait(driver).until(EC.url_contains("tool=echo"))
        filtered = calls_table(driver)
        assert filtered and {tool for _, _, tool, _ in filtered} == {"echo"}
        assert driver.find_element(By.ID, "f-tool").get_attribute("value") == "echo"
        screenshot(driver, "console-1280-calls-echo")

        # 10 (labels) and 11: the other pages.
        for page in ("tools", "connect", "status"):
            open_page(driver, server, page)
            assert_labelled(driver, page)
            screenshot(driver, f"console-1280-{page}")
        open_page(driver, server, "tools")
        assert "deploy" in driver.find_element(By.ID, "tools").text
        open_page(driver, server, "status")
        assert "ready" in driver.find_element(By.ID, "readiness").text

        # 8. A brand-admin of globex sees none of acme's keys, approvals or calls.
        sign_out(driver, server)
        sign_in(driver, server, "gus")
        assert h1(driver) == "Keys of globex"
        keys_text = driver.find_element(By.ID, "keys").text
        assert "globex-crm" in keys_text and globex_keys[0] in keys_text
        for secret_of_acme in ("laptop-agent", "billing-service", key_id, "acme"):
            assert secret_of_acme not in driver.page_source, secret_of_acme
        assert not driver.find_elements(By.ID, "brand-pick")
        open_page(driver, server, "approvals")
        assert "Nothing is waiting." in driver.page_source and "None yet." in driver.page_source
        assert approval_id not in driver.page_source and "deploy" not in driver.page_source
        open_page(driver, server, "calls")
        assert calls_table(driver) == [] and "No calls match." in driver.page_source
        assert key_id not in driver.page_source
        assert [o.text for o in Select(driver.find_element(By.ID, "f-brand")).options] == ["any", "globex"]
        screenshot(driver, "console-1280-calls-globex")
        for path in ("keys?brand=acme", "calls?brand=acme", "tools?brand=acme"):
            open_page(driver, server, path)
            refusal = driver.find_element(By.CSS_SELECTOR, "main [role=alert]").text
            assert "No brand 'acme'" in refusal, path
            assert key_id not in driver.page_source
        screenshot(driver, "console-1280-refused-acme")

        # 9. An auditor reads everything but can change nothing, even by a forged request from the page.
        sign_out(driver, server)
        sign_in(driver, server, "audrey")
        assert "laptop-agent" in driver.find_element(By.ID, "keys").text
        assert not driver.find_elements(By.ID, "create-key")
        assert not driver.find_elements(By.CSS_SELECTOR, "#keys button, main form[method=post]")
        assert "Revoke" not in driver.page_source and "Rotate" not in driver.page_source
        open_page(driver, server, "approvals")
        pending = driver.find_elements(By.CSS_SELECTOR, "article.approval")
        assert pending, "the re-issued call's new request is waiting"
        assert not driver.find_elements(By.CSS_SELECTOR, "main button, main textarea, form.decide")
        waiting_id = str(pending[0].get_attribute("id")).removeprefix("approval-")
        active = next(k for k in server.run(server.kernel.keys.list("acme")) if k.name == "ci-pipeline")
        before = [(k.key_id, k.revoked_at) for k in server.run(server.kernel.keys.list("acme"))]
        forged = [
            ("/console/api/keys", {"brand": "acme", "name": "sneaky", "role": "viewer", "scopes": ["orders.read"]}),
            (f"/console/api/keys/{active.key_id}/revoke", None),
            (f"/console/api/keys/{active.key_id}/rotate", None),
            (f"/console/api/approvals/{waiting_id}", {"decision": "approve", "reason": "sneaky"}),
        ]  # fmt: skip
        for path, body in forged:
            status, text = forged_post(driver, path, body)
            assert status == 403 and "only read" in text, (path, status, text)
        after = [(k.key_id, k.revoked_at) for k in server.run(server.kernel.keys.list("acme"))]
        assert after == before
        open_page(driver, server, "approvals")
        assert len(driver.find_elements(By.CSS_SELECTOR, "article.approval")) == len(pending)
        assert "pending" in driver.find_element(By.CSS_SELECTOR, f"#approval-{waiting_id} h3").text

    # 10 (narrow screens) and 11: at 390 px no page scrolls sideways, wide tables scroll in their own box,
    # and the navigation reaches every page.
    with open_browser(390, 844) as phone:
        assert phone.execute_script("return window.innerWidth") == 390
        open_page(phone, server, "login")
        assert_no_page_overflow(phone, "login")
        screenshot(phone, "console-390-login")
        sign_in(phone, server, "mo")
        for page in PAGES:
            open_page(phone, server, page)
            assert_no_page_overflow(phone, page)
            assert_labelled(phone, f"{page} at 390")
            for table in phone.find_elements(By.CSS_SELECTOR, "main table"):
                if table.size["width"] > 390:
                    assert phone.execute_script("return arguments[0].closest('.scroll') !== null", table), page
            links = phone.find_elements(By.CSS_SELECTOR, "nav[aria-label='Console sections'] a")
            assert [a.text for a in links] == ["Keys", "Approvals", "Calls", "Tools", "Connect", "Status"]
            for link in links:
                assert link.is_displayed()
                left, right = phone.execute_script(
                    "const r = arguments[0].getBoundingClientRect(); return [r.left, r.right];", link
                )
                assert left >= 0 and right <= 391, (page, link.text, left, right)
            if page in ("keys", "approvals", "calls", "connect"):
                screenshot(phone, f"console-390-{page}")
        # The navigation works by touch-sized clicks: from Status to Calls and on to Approvals.
        phone.find_element(By.LINK_TEXT, "Calls").click()
        wait(phone).until(lambda d: h1(d) == "Calls")
        assert phone.find_element(By.CSS_SELECTOR, "nav a[aria-current=page]").text == "Calls"
        phone.find_element(By.LINK_TEXT, "Approvals").click()
        wait(phone).until(lambda d: h1(d) == "Approvals")
        # A wide table scrolls inside its box, not the page.
        box = phone.find_element(By.CSS_SELECTOR, ".scroll")
        assert phone.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", box)
        assert_no_page_overflow(phone, "approvals after navigating")
