"""The real Segment-compatible SDKs pointed at Herald, and a proxy that fails a batch once.

* Python: ``segment-analytics-python`` and ``rudder-sdk-python`` (the ``test`` extra), run in
  a thread since they are synchronous;
* Node: ``@segment/analytics-node`` at the version locked in ``tests/support/node``, installed
  with ``npm ci`` into a temporary directory by :func:`install_node_client` (bounded; a missing
  ``node``/``npm`` fails the test, naming what to install);
* :class:`FailOnceProxy`: forwards every request to Herald and, for the first ``/v1/batch``,
  answers 500 although Herald committed it: the SDK's retry must be a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.http.server import HttpServer
from engine.values import HostPort

NODE_PACKAGE = Path(__file__).resolve().parent / "node"
NPM_TIMEOUT = 300.0
NODE_TIMEOUT = 120.0
FORWARDED = ("authorization", "content-type", "content-encoding", "user-agent",
             "x-retry-count")

# One neutral call list, made by every SDK: (method, fields) with Segment's field names.
Call = tuple[str, dict[str, Any]]


def scenario(prefix: str) -> list[Call]:
    """Anonymous browsing, an identify joining it, purchases, the other call types, and
    anonymous events after the identify; every call has its own messageId."""
    visitor, user = f"{prefix}-visitor", f"{prefix}-user"
    calls: list[Call] = []
    for seq in range(5):
        calls.append(("track", {"anonymousId": visitor, "event": "Product Viewed",
                                "properties": {"seq": seq}}))
    calls.append(("page", {"anonymousId": visitor, "name": "Pricing",
                           "properties": {"seq": 50}}))
    calls.append(("identify", {"userId": user, "anonymousId": visitor,
                               "traits": {"email": f"{prefix}@example.com", "plan": "pro"}}))
    for seq in range(20):
        calls.append(("track", {"userId": user, "event": "Order Completed",
                                "properties": {"seq": 200 + seq, "total": 10.5}}))
    calls.append(("screen", {"userId": user, "name": "Home", "properties": {"seq": 60}}))
    calls.append(("group", {"userId": user, "groupId": "acme", "traits": {"seats": 5}}))
    calls.append(("alias", {"userId": user, "previousId": f"{prefix}-old"}))
    for seq in range(100, 103):
        calls.append(("track", {"anonymousId": visitor, "event": "Product Viewed",
                                "properties": {"seq": seq}}))
    return [(method, {**fields, "messageId": f"{prefix}-{n}"})
            for n, (method, fields) in enumerate(calls)]


_PYTHON_NAMES = {"userId": "user_id", "anonymousId": "anonymous_id", "messageId": "message_id",
                 "groupId": "group_id", "previousId": "previous_id"}


def run_python_sdk(client_class: Callable[..., Any], host: str, write_key: str,
                   calls: list[Call], **options: Any) -> list[str]:
    """Make ``calls`` with a Python SDK client, flush, shut down; returns reported errors."""
    errors: list[str] = []
    client = client_class(write_key=write_key, host=host, max_retries=3, upload_size=10,
                          on_error=lambda error, batch: errors.append(repr(error)), **options)
    for method, fields in calls:
        getattr(client, method)(**{_PYTHON_NAMES.get(k, k): v for k, v in fields.items()})
    client.flush()
    client.shutdown()
    return errors


def install_node_client(directory: Path) -> Path:
    """``npm ci`` the locked Node SDK into ``directory``; returns the send script's path."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("the Segment Node SDK test needs Node.js 18+ with npm on PATH "
                           "(Debian: apt-get install nodejs npm)")
    for name in ("package.json", "package-lock.json", "send.js"):
        shutil.copy(NODE_PACKAGE / name, directory / name)
    try:
        result = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                                cwd=directory, capture_output=True, text=True,
                                timeout=NPM_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"npm ci did not finish in {NPM_TIMEOUT:.0f}s") from None
    if result.returncode != 0:
        raise RuntimeError(f"npm ci failed ({result.returncode}): {result.stderr[-2000:]}")
    return directory / "send.js"


async def run_node_sdk(script: Path, host: str, write_key: str,
                       calls: list[Call]) -> dict[str, Any]:
    calls_file = script.parent / "calls.json"
    calls_file.write_text(json.dumps(calls))
    process = await asyncio.create_subprocess_exec(
        "node", str(script), str(calls_file), cwd=script.parent,
        env={**os.environ, "HERALD_HOST": host, "HERALD_WRITE_KEY": write_key},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode()[-2000:]
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


@dataclass
class FailOnceProxy:
    """Forwards to ``upstream``; the first /v1/batch is committed upstream, then answered 500."""

    upstream: str
    server: HttpServer | None = None
    batches: int = 0
    failed: int = 0
    retries_seen: int = 0

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def __aenter__(self) -> FailOnceProxy:
        client = httpx.AsyncClient(base_url=self.upstream, timeout=30.0)

        async def forward(request: Request) -> Response:
            body = await request.body()
            headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
            answer = await client.post(request.url.path, content=body, headers=headers)
            if request.url.path == "/v1/batch":
                self.batches += 1
                if "x-retry-count" in request.headers:
                    self.retries_seen += 1
                if self.failed == 0 and answer.status_code == 200:
                    self.failed += 1
                    return Response(b'{"error": "injected"}', status_code=500,
                                    media_type="application/json")
            return Response(answer.content, status_code=answer.status_code,
                            media_type=answer.headers.get("content-type"))

        self._client = client
        app = Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])])
        self.server = HttpServer(app, HostPort("127.0.0.1", 0))
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.stop()
        await self._client.aclose()
