"""Fuzzing tool arguments against each pack's input schema, through the real governed pipeline: a
started kernel, a minted key and an `mcp.Client` in memory (`qaqnuz.testing.connect`), for the testkit pack and
the demo shop's `sql` pack. Arguments are drawn from each tool's schema (`fuzzing.from_schema`), as arbitrary
JSON (canaries, huge numbers) and as schema-valid arguments with one property retyped. Invariants:

* every answer is SPEC §3's envelope (`fuzzing.check_envelope`): a failure echoes no canary and leaks no
  exception, parser or pydantic text;
* for a tool the key can see, arguments the schema refuses (by the `jsonschema` package, not the server's own
  validator) are answered `validation`, and arguments it accepts never are;
* a tool the key cannot see is answered `permission`, whatever the arguments.

One kernel and one client per pack for the module, on a loop of their own thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import check_envelope, from_schema, fuzz_settings, json_objects, wrong_values
from kit import kit_config
from qaqnuz.testing import connect, start_kernel, write_config

pytestmark = pytest.mark.fuzz
#: Tools left out: `slow` (each call waits out its 0.5 s timeout).
SKIP = {"slow"}
#: Testkit tools that exist but are hidden from the key (not exposable, sensitive or disabled for acme).
TESTKIT_HIDDEN = ("deploy", "routed", "secret_dump", "disabled_tool", "hidden_tool")
UNLIMITED = '\n[plans.growth]\nlimits = { per_key = "1000000/60s", per_brand = "1000000/60s" }\n'


class Session:
    """A kernel and a connected client living on a loop in their own thread; `run` drives them from a test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client: Any = None
        self.schemas: dict[str, dict[str, Any]] = {}
        self._closing: asyncio.Event | None = None
        self._task: Any = None

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def open(self, config: Path, plugins: list[Any], scopes: list[str], role: str) -> None:
        opened = threading.Event()

        async def serve() -> None:
            kernel = await start_kernel(config, plugins=plugins)
            try:
                key, _ = await kernel.keys.mint(brand="acme", scopes=scopes, name="fuzz", role=role)
                self._closing = asyncio.Event()
                async with connect(kernel, key) as client:
                    self.client = client
                    listed = await client.list_tools()
                    self.schemas = {t.name: dict(t.input_schema) for t in listed.tools}
                    opened.set()
                    await self._closing.wait()
            finally:
                opened.set()
                await kernel.aclose()

        self._task = asyncio.run_coroutine_threadsafe(serve(), self.loop)
        opened.wait(60)
        if self.client is None:
            self._task.result(5)  # raises what went wrong
            raise RuntimeError("the session did not open")

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = self.run(self.client.call_tool(name, arguments))
        return result.model_dump(mode="json", by_alias=True, exclude_none=True)

    def close(self) -> None:
        if self._closing is not None:
            self.loop.call_soon_threadsafe(self._closing.set)
        if self._task is not None:
            self._task.result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _testkit(folder: Path, session: Session) -> tuple[str, ...]:
    config = write_config(folder, kit_config(per_key="1000000/60s", per_brand="1000000/60s"))
    session.open(config, ["testkit_pack.plugin"], ["orders.read", "orders.write"], "manager")
    return TESTKIT_HIDDEN


def _shop(folder: Path, session: Session) -> tuple[str, ...]:
    import qaqnuz_pack_sql
    from qaqnuz_demo import demo, shop

    shop.create(folder / "shop.db")
    config = write_config(folder, demo.CONFIG + UNLIMITED)
    session.open(config, [qaqnuz_pack_sql], ["orders.read", "contacts.read", "orders.write"], "manager")
    return ()


@pytest.fixture(scope="module", params=["testkit", "shop"])
def pack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    session = Session()
    try:
        hidden = {"testkit": _testkit, "shop": _shop}[request.param](tmp_path_factory.mktemp(request.param), session)
        session.hidden = hidden  # type: ignore[attr-defined]
        assert session.schemas, "the key sees no tool"
        yield session
    finally:
        session.close()


def _exotic(value: Any) -> bool:
    """A value where the `jsonschema` package and the server's validator may fairly differ: a number JSON
    parsers do not hold exactly (beyond 64 bits, or a float that is a whole number), or a string ending in a
    newline (Python's `$` matches before it, ECMA-262's does not)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, str):
        return value.endswith("\n")
    if isinstance(value, dict):
        return any(_exotic(v) for v in value.values())
    if isinstance(value, list):
        return any(_exotic(v) for v in value)
    return False


def _check(pack: Session, name: str, arguments: dict[str, Any]) -> None:
    result = pack.call(name, arguments)
    envelope = check_envelope(result)
    schema = pack.schemas.get(name)
    if schema is None:  # hidden, unknown: one generic permission error
        assert envelope.get("error_class") == "permission", envelope
        return
    refused = not jsonschema.Draft202012Validator(schema).is_valid(arguments)
    if refused:
        assert envelope.get("error_class") == "validation", (arguments, envelope)
    elif not _exotic(arguments):
        assert envelope.get("error_class") != "validation", (arguments, envelope)


def _tools(pack: Session) -> list[str]:
    return sorted(set(pack.schemas) - SKIP)


@fuzz_settings(ci_examples=60)
@given(data=st.data())
def test_arguments_the_schema_accepts(pack: Session, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(_tools(pack)), label="tool")
    arguments = data.draw(from_schema(pack.schemas[name]), label="arguments")
    _check(pack, name, arguments)


@fuzz_settings(ci_examples=60)
@given(data=st.data())
def test_arbitrary_arguments(pack: Session, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([*_tools(pack), *pack.hidden, "no_such_tool"]), label="tool")
    arguments = data.draw(json_objects(python=True), label="arguments")
    _check(pack, name, arguments)


@fuzz_settings(ci_examples=60)
@given(data=st.data())
def test_valid_arguments_with_one_property_retyped_or_added(pack: Session, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(_tools(pack)), label="tool")
    schema = pack.schemas[name]
    arguments = dict(data.draw(from_schema(schema), label="valid"))
    names = sorted({*schema.get("properties", {}), *arguments}) or ["extra"]
    field = data.draw(st.sampled_from(names) | st.text(max_size=8).map(lambda t: "CANARY0" + t), label="field")
    arguments[field] = data.draw(wrong_values(python=True), label="value")
    _check(pack, name, arguments)
