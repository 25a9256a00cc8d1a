"""Protocol faults over stdio, against a real `qaqnuz-mcp`: a line that is not JSON is answered -32700 and
one that is not a JSON-RPC message -32600, with `id: null` unless it carried a usable id, never with parser
text or the caller's input; a line over `max_message_bytes` is dropped as it arrives and answered -32600; and
the session goes on serving after each of them.

Measured before: malformed lines were answered with silence, and a 100 MB line was buffered whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qaqnuz.testing import start_kernel, write_config

SUPPORT = Path(__file__).resolve().parents[3] / "tests" / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

from kit import kit_config, server_env  # noqa: E402
from qaqnuz_stdio.faults import fault  # noqa: E402

pytestmark = pytest.mark.anyio
BIN = Path(sys.executable).parent
CANARY = "zq-canary-7731"
HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": HELLO}

#: (line sent, expected code, expected id): each must be answered, and never echo CANARY.
FAULTS = [
    (f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{CANARY}"', -32700, None),  # cut short
    (f"not json {CANARY}", -32700, None),
    ("\x00\x01\x02", -32700, None),
    (f'{{"jsonrpc":"2.0","id":2,"method":"x"}} trailing {CANARY}', -32700, None),
    (f'[{{"jsonrpc":"2.0","id":3,"method":"tools/list"}},"{CANARY}"]', -32600, None),  # a batch
    (f'"{CANARY}"', -32600, None),
    ("42", -32600, None),
    ("null", -32600, None),
    (f'{{"jsonrpc":"1.0","id":4,"method":"tools/list","note":"{CANARY}"}}', -32600, 4),
    (f'{{"id":5,"method":"tools/list","x":"{CANARY}"}}', -32600, 5),
    ('{"jsonrpc":"2.0","id":6,"method":7}', -32600, 6),
    ('{"jsonrpc":"2.0","id":7,"method":"tools/list","params":[1,2]}', -32600, 7),
    ('{"jsonrpc":"2.0","id":null,"method":"tools/list"}', -32600, None),
    ('{"jsonrpc":"2.0","id":1.5,"method":"tools/list"}', -32600, None),
    ('{"jsonrpc":"2.0","id":true,"method":"tools/list"}', -32600, None),
    (f'{{"jsonrpc":"2.0","id":{{"x":"{CANARY}"}},"method":"tools/list"}}', -32600, None),
    ('{"jsonrpc":"2.0","id":8}', -32600, 8),  # neither a request nor an answer
    ('{"jsonrpc":"2.0"}', -32600, None),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(("line", "code", "request_id"), FAULTS)
def test_each_fault_has_its_fixed_answer(line: str, code: int, request_id: object) -> None:
    answer = fault(line)
    assert answer is not None
    decoded = json.loads(answer)
    assert decoded["id"] == request_id and decoded["error"]["code"] == code
    assert CANARY not in answer.decode() and "Traceback" not in answer.decode()


@pytest.mark.parametrize(
    "line",
    ['{"jsonrpc":"2.0","id":1,"method":"tools/list"}', '{"jsonrpc":"2.0","method":"notifications/initialized"}',
     '{"jsonrpc":"2.0","id":"a","result":{}}', '{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"m"}}'],
)  # fmt: skip
def test_messages_pass(line: str) -> None:
    assert fault(line) is None


async def _serving(folder: Path, config: str) -> subprocess.Popen[bytes]:
    """A real `qaqnuz-mcp` on `config`, with a key that holds `orders.read`."""
    cfg = write_config(folder, config)
    kernel = await start_kernel(cfg, plugins=["stdio", "testkit_pack.plugin"])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["orders.read"], name="faults")
    await kernel.aclose()
    proc = subprocess.Popen(
        [str(BIN / "qaqnuz-mcp")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=server_env(cfg, key),
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    return proc


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_real_server_answers_every_fault_and_goes_on_serving(tmp_path, fast_path: bool) -> None:
    config = kit_config() + f"\n[plugins.stdio]\nfast_path = {str(fast_path).lower()}\nmax_message_bytes = 65536\n"
    proc = await _serving(tmp_path, config)

    def send(raw: bytes) -> dict:
        proc.stdin.write(raw)  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(proc.stdout.readline())  # type: ignore[union-attr]

    assert "result" in send(json.dumps(INIT).encode() + b"\n")
    proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n\n')  # a blank line: skipped
    answers = []
    for line, _, _ in FAULTS:
        answers.append(send(line.encode() + b"\n"))
    answers.append(send(b"\xff\xfe not utf-8 \n"))
    huge = b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"message":"'
    huge += b"x" * (3 * 1024 * 1024) + CANARY.encode() + b'"}}}\n'  # 48x the limit, sent in one go
    answers.append(send(huge))
    still = {"name": "echo", "arguments": {"message": "still here"}}
    echoed = send(json.dumps({"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": still}).encode() + b"\n")
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()
    expected = [(code, request_id) for _, code, request_id in FAULTS] + [(-32700, None), (-32600, None)]
    assert [(a["error"]["code"], a["id"]) for a in answers] == expected
    assert "max_message_bytes" in answers[-1]["error"]["message"]
    assert all(CANARY not in json.dumps(a) for a in answers)
    assert echoed["id"] == 10 and echoed["result"]["structuredContent"]["data"]["message"] == "still here"
    assert CANARY.encode() not in stderr  # nothing of the input is logged either


async def test_the_malformed_battery_over_stdio(tmp_path) -> None:
    """The 56-message battery (tests/support/malformed.py) in the session era: each message is followed by a
    ping, and everything answered before the ping's answer belongs to the message. No answer carries parser
    or pydantic text, an exception or the caller's input, and each is a well-formed JSON-RPC answer."""
    from malformed import battery, check_message, leaks

    proc = await _serving(tmp_path, kit_config())
    proc.stdin.write(json.dumps(INIT).encode() + b"\n")
    proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    proc.stdin.flush()
    assert "result" in json.loads(proc.stdout.readline())
    problems: list[str] = []
    answered = 0
    for number, (name, body) in enumerate(battery(None)):
        sync = f"sync-{number}"
        proc.stdin.write(body + b"\n" + json.dumps({"jsonrpc": "2.0", "id": sync, "method": "ping"}).encode() + b"\n")
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline().decode()
            assert line, f"{name}: the server closed stdout"
            problems += [f"{name}: {leak}" for leak in leaks(line)]
            message = json.loads(line)
            if message.get("id") == sync:
                assert "result" in message, f"{name}: the ping after it failed: {line}"
                break
            answered += 1
            problems += [f"{name}: {problem}" for problem in check_message(message)]
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr.decode()
    assert problems == []
    assert answered == 54  # every message but the battery's two notifications was answered
