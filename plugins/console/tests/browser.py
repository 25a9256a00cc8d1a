"""A real browser for the console's tests: Debian's Chromium driven by Selenium through Debian's chromedriver.

    paths = require_chromium()          # skips without Chromium; fails under `CI` (never a silent skip there)
    with open_browser(width=390) as driver:
        driver.get(url)
        screenshot(driver, "login-390")

Nothing is downloaded: Selenium Manager is never asked for a browser or a driver (both paths are given), the
profile is a fresh temporary folder, extensions, sync, component updates and background networking are off,
and host names other than 127.0.0.1 / localhost resolve to nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NoReturn

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[3]
INSTALL_HINT = "install Debian's browser and driver: apt-get install chromium chromium-driver"
PAGE_LOAD_TIMEOUT = 30.0


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) from PATH, else from /usr/bin; None when either is missing."""
    found = []
    for name in ("chromium", "chromedriver"):
        path = shutil.which(name) or shutil.which(name, path="/usr/bin")
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def _missing(what: str) -> NoReturn:
    message = f"{what}: {INSTALL_HINT}"
    if os.environ.get("CI"):
        pytest.fail(message)  # in CI a missing browser is a broken setup, never a silent skip
    pytest.skip(message)


def require_chromium() -> tuple[str, str]:
    """(browser, driver), or skip the calling test (fail it under `CI`) when Chromium or its driver is absent."""
    paths = chromium_paths()
    if paths is None:
        _missing("Chromium or chromedriver not found")
    return paths


def _options(binary: str, width: int, height: int, profile: Path) -> Options:
    options = Options()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--metrics-recording-only",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
        # Only the tests' own servers are reachable: every other name resolves to nothing.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to start its sandbox as root
    return options


def _kill_leftovers(profile: Path) -> None:
    """SIGKILL any process still running with our own temporary profile (Linux /proc; a no-op elsewhere)."""
    marker = f"--user-data-dir={profile}".encode()
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline.split(b"\0"):
            with suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


@contextmanager
def open_browser(width: int = 1280, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A headless `selenium.webdriver.Chrome` whose viewport is `width`x`height` CSS px, with a fresh profile;
    implicit wait 0, page load timeout 30 s. Quits the driver, and ends any Chromium process of its profile, on
    exit. Calls `require_chromium()` first (so it skips, or fails under `CI`, without Chromium)."""
    binary, driver_path = require_chromium()
    profile = Path(tempfile.mkdtemp(prefix="qaqnuz-chromium-"))
    service = Service(executable_path=driver_path)
    driver = None
    try:
        driver = webdriver.Chrome(options=_options(binary, width, height, profile), service=service)
        # Headless Chromium will not make a window narrower than 500 px: pin the viewport to exactly the size
        # asked for (CSS pixels, scale 1) so narrow, phone-like layouts are really exercised.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.implicitly_wait(0)
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
        yield driver
    finally:
        try:
            if driver is not None:
                driver.quit()
            else:
                service.stop()
        finally:
            _kill_leftovers(profile)
            shutil.rmtree(profile, ignore_errors=True)


def artifacts_dir() -> Path:
    """`$QAQNUZ_TEST_ARTIFACTS`, else `<repo>/test-artifacts/console/`; created when missing."""
    configured = os.environ.get("QAQNUZ_TEST_ARTIFACTS")
    folder = Path(configured) if configured else ROOT / "test-artifacts" / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save the browser window as `<artifacts>/<name>.png` (name made file-safe); returns the path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "screenshot"
    path = artifacts_dir() / f"{safe}.png"
    if not driver.save_screenshot(str(path)):
        raise RuntimeError(f"the browser did not write a screenshot to {path}")
    return path
