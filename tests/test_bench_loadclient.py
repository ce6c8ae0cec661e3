"""The benches' load client (``bench/loadclient.py``) against a real HTTP server: Python's
``http.server`` on loopback, answering as its handler is told by the request's path."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.loadclient import HttpConnection, run_load


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/vanish":
            self.close_connection = True  # no answer at all
            return
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"0\r\n\r\n")
            return
        status = 202 if self.path == "/accept" else 400
        answer = b"echo:" + body + b":" + self.headers.get("X-Bench", "").encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        if self.path == "/close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


async def test_answers_on_one_keep_alive_connection_and_after_a_close(
        server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    connection = HttpConnection("127.0.0.1", port, {"X-Bench": "yes"})
    await connection.connect()
    first = connection._reader
    assert await connection.request("POST", "/accept", b"one") == (202, b"echo:one:yes")
    assert await connection.request("POST", "/other", b"") == (400, b"echo::yes")
    assert connection._reader is first  # the same connection, kept alive
    assert await connection.request("POST", "/close", b"two") == (400, b"echo:two:yes")
    assert connection._reader is None  # the server closed: the next request reconnects
    assert await connection.request("POST", "/accept", b"3") == (202, b"echo:3:yes")
    connection.close()


async def test_a_chunked_answer_and_a_server_gone_without_one_are_errors(
        server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    connection = HttpConnection("127.0.0.1", port, {})
    with pytest.raises(ValueError, match="chunked"):
        await connection.request("POST", "/chunked", b"x")
    connection.close()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(connection.request("POST", "/vanish", b"x"), 10)
    connection.close()


async def test_run_load_returns_the_tags_of_accepted_requests_only(
        server: ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    made: list[int] = []

    def make_body(worker: int) -> tuple[bytes, int]:
        made.append(worker)
        return b"%d" % len(made), len(made)

    result, elapsed = await run_load("127.0.0.1", port, {}, 3, 30.0, make_body, "/accept",
                                     max_requests=40)
    assert elapsed > 0 and result.errors == 0
    assert result.statuses == {202: 40} and len(result.latencies) == 40
    assert sorted(result.acknowledged) == list(range(1, 41))
    assert set(made) == {0, 1, 2}
    refused, _ = await run_load("127.0.0.1", port, {}, 2, 30.0, make_body, "/other",
                                max_requests=10)
    assert refused.statuses == {400: 10} and refused.acknowledged == []
