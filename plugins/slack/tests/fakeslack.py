"""A local fake Slack for the tests: a real HTTP server on 127.0.0.1 (uvicorn in a thread) answering the Web
API methods the plugin uses with Slack's response shapes (`{"ok": true, ...}`, `{"ok": false, "error": ...}`,
HTTP 429 with Retry-After), and a sender of interaction payloads signed the way Slack signs them.

Only the base URL differs from production: `base_url = fake.api`.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "xoxb-test-0000000000-fake"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
METHODS = ("chat.postMessage", "chat.update", "chat.postEphemeral", "views.open", "usergroups.users.list")


@dataclass
class Call:
    method: str
    body: dict[str, Any]


@dataclass
class FakeSlack:
    #: Every Web API request that reached the fake, in order (also those answered with an error).
    calls: list[Call] = field(default_factory=list)
    #: Answers to give before behaving normally: (status, headers, body) each.
    scripted: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    #: While true every request gets HTTP 503 (Slack down).
    down: bool = False
    #: Seconds to hold every answer (a slow Slack).
    delay: float = 0.0
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: User group id -> its members' user ids (for `usergroups.users.list`).
    groups: dict[str, list[str]] = field(default_factory=dict)
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _ts: Any = field(default_factory=lambda: itertools.count(100))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def made(self, method: str) -> list[dict[str, Any]]:
        return [c.body for c in self.calls if c.method == method]

    async def _method(self, request: Request) -> Response:
        method = request.path_params["method"]
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            body = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        else:
            try:
                body = await request.json()
            except ValueError:
                body = {}
        self.calls.append(Call(method, body))
        if self.delay:
            import anyio

            await anyio.sleep(self.delay)
        if self.down:
            return Response("upstream connect error", status_code=503)
        if self.scripted:
            status, headers, answer = self.scripted.pop(0)
            return JSONResponse(answer, status_code=status, headers=headers)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        if method not in METHODS:
            return JSONResponse({"ok": False, "error": "unknown_method"})
        if method == "usergroups.users.list":  # Slack reads this one form-encoded, not as JSON
            members = self.groups.get(str(body.get("usergroup")))
            if members is None:
                return JSONResponse({"ok": False, "error": "no_such_subteam"})
            return JSONResponse({"ok": True, "users": members})
        if method == "views.open":
            if not body.get("trigger_id"):
                return JSONResponse({"ok": False, "error": "invalid_arguments"})
            return JSONResponse({"ok": True, "view": {"id": "V0001", **body.get("view", {})}})
        channel = body.get("channel")
        if not isinstance(channel, str) or not channel.startswith(("C", "G")):
            return JSONResponse({"ok": False, "error": "channel_not_found"})
        if method == "chat.postEphemeral":
            return JSONResponse({"ok": True, "message_ts": f"{int(time.time())}.{next(self._ts):06d}"})
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            message = {"type": "message", "text": body.get("text", ""), "blocks": body.get("blocks", []), "ts": ts}
            self.messages[(channel, ts)] = message
            return JSONResponse({"ok": True, "channel": channel, "ts": ts, "message": message})
        key = (channel, str(body.get("ts")))
        if key not in self.messages:
            return JSONResponse({"ok": False, "error": "message_not_found"})
        self.messages[key] = {**self.messages[key], "text": body.get("text", ""), "blocks": body.get("blocks", [])}
        return JSONResponse({"ok": True, "channel": channel, "ts": key[1], "text": body.get("text", "")})

    def start(self) -> FakeSlack:
        app = Starlette(routes=[Route("/api/{method}", self._method, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not (self._server.started and self._server.servers):
            if time.monotonic() > deadline:
                raise TimeoutError("fake Slack did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # interactions, sent the way Slack sends them

    def posted(self, approval_id: str) -> tuple[str, str, dict[str, Any]]:
        """(channel, ts, message) of the request message for `approval_id`."""
        for (channel, ts), message in self.messages.items():
            if approval_id in json.dumps(message["blocks"]):
                return channel, ts, message
        raise AssertionError(f"no message for {approval_id}")

    def click(self, approval_id: str, user: str, action: str = "qaqnuz_approve", *, channel: str | None = None,
              value: str | None = None) -> dict[str, Any]:  # fmt: skip
        """The block_actions payload a click on the request's button produces."""
        posted_channel, ts, message = self.posted(approval_id)
        channel = channel or posted_channel
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": "T0001"},
            "api_app_id": "A0001",
            "team": {"id": "T0001", "domain": "example"},
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
            "trigger_id": "1234.5678.trigger",
            "channel": {"id": channel, "name": "approvals"},
            "message": message,
            "response_url": f"http://127.0.0.1:{self.port}/actions/T0001/1/x",
            "actions": [
                {
                    "action_id": action,
                    "block_id": "qaqnuz_decision",
                    "type": "button",
                    "value": value or approval_id,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def deny_submission(self, view: dict[str, Any], user: str, reason: str) -> dict[str, Any]:
        """The view_submission payload for the Deny modal `view` (as views.open received it)."""
        return {
            "type": "view_submission",
            "user": {"id": user},
            "team": {"id": "T0001"},
            "view": {
                "id": "V0001",
                "callback_id": view["callback_id"],
                "private_metadata": view["private_metadata"],
                "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
            },
        }


def signed(
    payload: dict[str, Any], *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The form body and headers Slack sends for `payload`."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }
    return body, headers


def send(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=10)
