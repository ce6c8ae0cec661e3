"""A sink that answers a share of messages with 4xx or 5xx, for ``herald bench e2e``.

``python -m bench.fault_sink --listen 127.0.0.1:PORT --tempfail 0.05 --permfail 0.02
--record FILE`` runs an aiosmtpd server in its own process (so its CPU is measured apart). At
the end of each DATA it draws one number (seeded): below ``permfail`` it answers 550, below
``permfail + tempfail`` 451, else 250; every attempt draws again, as a real server's answers
vary. Each answer is one JSON line in ``FILE``, written before the reply:
``{"seq": 17, "code": 250, "t": 1733110000.123}`` where ``seq`` comes from the bench
message's ``Subject: herald-bench seq=17 t=...`` header (null for any other message) and ``t``
is the wall-clock time of the answer. The bench joins those lines with its own schedule.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import signal
import sys
import time
from typing import IO, Any

import orjson
import uvloop
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.args import OneLineParser, share

SUBJECT = re.compile(rb"^Subject: herald-bench seq=(\d+) t=([0-9.]+)\r?$", re.MULTILINE)
HEADER_LIMIT = 16384  # the Subject is among the first headers; do not scan whole bodies


def bench_subject(seq: int, intended: float) -> str:
    """The Subject the bench workflow renders; the sink reads it back (``parse_seq``)."""
    return f"herald-bench seq={seq} t={intended:.6f}"


def parse_seq(data: bytes) -> int | None:
    match = SUBJECT.search(data[:HEADER_LIMIT].split(b"\r\n\r\n", 1)[0])
    return int(match.group(1)) if match else None


class FaultHandler:
    def __init__(self, tempfail: float, permfail: float, seed: int, record: IO[bytes]) -> None:
        self.tempfail = tempfail
        self.permfail = permfail
        self.random = random.Random(seed)
        self.record = record

    def decide(self) -> int:
        draw = self.random.random()
        if draw < self.permfail:
            return 550
        if draw < self.permfail + self.tempfail:
            return 451
        return 250

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        code = self.decide()
        seq = parse_seq(envelope.original_content or b"")
        self.record.write(orjson.dumps({"seq": seq, "code": code, "t": time.time()}) + b"\n")
        self.record.flush()
        if code == 550:
            return "550 5.1.1 Bench sink: mailbox unavailable"
        if code == 451:
            return "451 4.3.0 Bench sink: try again later"
        return "250 2.0.0 Ok: accepted"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="bench.fault_sink", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:2525", help="HOST:PORT")
    parser.add_argument("--tempfail", type=share, default=0.0, help="share answered 451")
    parser.add_argument("--permfail", type=share, default=0.0, help="share answered 550")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record", required=True, help="JSON lines, one per answer")
    args = parser.parse_args(argv)
    if args.tempfail + args.permfail > 1:
        parser.error("--tempfail + --permfail must be <= 1")
    return args


async def serve(args: argparse.Namespace, record: IO[bytes]) -> None:
    """Serve until SIGTERM. Each answer's line is a small write to the page cache, made on
    the loop before the reply (no fsync: the record only has to outlive this process)."""
    host, _, port = args.listen.rpartition(":")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    handler = FaultHandler(args.tempfail, args.permfail, args.seed, record)

    def factory() -> Any:
        return SMTP(handler, hostname="sink.bench.test", ident="bench fault sink")

    server = await loop.create_server(factory, host, int(port))
    print(f"fault sink listening on {args.listen}", flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with open(args.record, "ab") as record:
        uvloop.run(serve(args, record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
