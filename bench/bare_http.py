"""The bare HTTP stack: the ceiling ``herald bench intake`` measures Herald's intake against.

A Starlette app served by uvicorn on uvloop and httptools, of the same shape as
``POST /v1/events``: it reads the body, parses the JSON with orjson and answers
``202 {"accepted": n, "duplicates": 0}``, with no authentication, no validation and no
database. Run it as ``python -m bench.bare_http HOST:PORT``; it serves until SIGTERM
(:class:`BareHttpProcess` starts and stops it on a free loopback port).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.herald_process import free_port

JSON = "application/json"
HOST = "127.0.0.1"


def accepted_count(body: Any) -> int:
    """How many events the real endpoint would accept from ``body`` (one, or a batch)."""
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        return len(body["events"])
    return 1


async def post_events(request: Request) -> Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return Response(orjson.dumps({"error": "invalid_json"}), 400, media_type=JSON)
    return Response(orjson.dumps({"accepted": accepted_count(body), "duplicates": 0}), 202,
                    media_type=JSON)


def build_app() -> Starlette:
    return Starlette(routes=[Route("/v1/events", post_events, methods=["POST"])])


class BareHttpProcess:
    """``python -m bench.bare_http`` on a free port, ready once it accepts connections."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.bare_http",
                                         f"{HOST}:{self.port}"], env=os.environ.copy())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bench.bare_http exited with {self.process.returncode}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("bench.bare_http did not listen in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def main(argv: list[str]) -> int:
    host, _, port = argv[0].rpartition(":")
    uvicorn.run(build_app(), host=host, port=int(port), loop="uvloop", http="httptools",
                lifespan="off", access_log=False, log_level="warning", server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
