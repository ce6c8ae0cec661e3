"""``herald bench dkim``: DKIM signatures/s per algorithm on a generated message (3 KB default).

For RSA-2048 and Ed25519 it measures the bare OpenSSL sign operation (the ceiling) and the whole
``DkimSigner.sign()`` on one thread, per second of CPU time, in alternating slices (medians of
``--rounds``, and the median share of the ceiling), and the delivery service's path: batches through
``SigningPool.sign_batch`` (worker processes) from an event loop; then messages/s for a domain
with both keys (two signatures each). Keys are
generated into a temporary directory and loaded through ``DkimSigner.from_configs``. Prints a
table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import uvloop
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mta.dkim.keys import write_keypair
from mta.dkim.signer import DkimKey, DkimKeyConfig, DkimSigner
from mta.dkim.signing_pool import SigningPool

DOMAIN = "bench.example"
MESSAGES = 8192  # cycled through; each has three header values of its own


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench dkim", description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per measurement")
    parser.add_argument("--size", type=int, default=3072, help="message size in bytes")
    parser.add_argument("--processes", type=int, default=2, help="signing worker processes")
    parser.add_argument("--batch", type=int, default=500, help="messages per sign_batch call")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating slices of OpenSSL-only and sign() (medians reported)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.size < 512 or args.processes < 1 or args.batch < 1 \
            or args.rounds < 1:
        parser.error("need --seconds > 0, --size >= 512, --processes >= 1, --batch >= 1 and "
                     "--rounds >= 1")
    return args


def build_message(size: int, recipient: int = 0) -> bytes:
    """A campaign-like message of about ``size`` bytes: the usual headers, with To, Message-ID
    and List-Unsubscribe unique to ``recipient``, and a text body."""
    head = (
        f"From: Bench Shop <news@{DOMAIN}>\r\nTo: Customer <c{recipient}@recipient.example>\r\n"
        "Subject: Your weekly picks are here\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        f"Message-ID: <bench.{recipient}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        f"List-Unsubscribe: <https://{DOMAIN}/u/{recipient:08d}>, "
        f"<mailto:u@{DOMAIN}?subject={recipient:08d}>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        f"Feedback-ID: weekly:picks:herald:{DOMAIN}\r\n\r\n"
    ).encode()
    line = b"Hello, here are this week's picks, chosen from what you viewed recently.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def build_messages(size: int) -> list[bytes]:
    """Distinct messages, more than the signer's header caches hold, as in a real campaign."""
    return [build_message(size, recipient) for recipient in range(MESSAGES)]


def rate(operation: Callable[[int], object], seconds: float) -> float:
    """Calls per second of this thread's CPU time of ``operation(call_number)``: what one core
    does, however busy the machine is (``openssl speed`` reports per CPU second too)."""
    count, start = 0, time.thread_time()
    deadline = start + seconds
    while True:
        for i in range(count, count + 16):
            operation(i)
        count += 16
        now = time.thread_time()
        if now >= deadline:
            return count / (now - start)


def paired_rates(ceiling: Callable[[int], object], operation: Callable[[int], object],
                 seconds: float, rounds: int) -> tuple[float, float, float]:
    """Median ceiling rate, median operation rate and median share of the ceiling, measured in
    ``rounds`` alternating slices so that both see the same machine."""
    pairs = [(rate(ceiling, seconds / rounds), rate(operation, seconds / rounds))
             for _ in range(rounds)]
    return (statistics.median(c for c, _ in pairs), statistics.median(o for _, o in pairs),
            statistics.median(o / c for c, o in pairs))


async def pool_rate(pool: SigningPool, messages: Sequence[bytes], seconds: float,
                    batch: int) -> float:
    """Messages per second through ``SigningPool.sign_batch``, one claimed batch at a time."""
    count = 0
    await pool.sign_batch(messages[:batch])  # start the worker processes
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        first = count % len(messages)
        signed = await pool.sign_batch(messages[first:first + batch])
        if any(isinstance(item, Exception) for item in signed):
            raise SystemExit(f"bench dkim: signing failed: {signed[0]!r}")
        count += len(signed)
    return count / (time.perf_counter() - start)


def bare_operation(key: DkimKey, digest: bytes) -> Callable[[int], object]:
    """The ceiling: the private-key operation every signature needs, called straight on the
    ``cryptography`` key (OpenSSL), as ``sign()`` must do it: PKCS#1 v1.5 over a SHA-256 digest
    (Prehashed) for RSA, Ed25519 over the 32-byte digest (RFC 8463)."""
    private_key = key.private_key
    if isinstance(private_key, rsa.RSAPrivateKey):
        rsa_padding, prehashed = padding.PKCS1v15(), Prehashed(hashes.SHA256())
        return lambda _: private_key.sign(digest, rsa_padding, prehashed)
    return lambda _: private_key.sign(digest)


def measure(
    name: str, configs: Sequence[DkimKeyConfig], messages: Sequence[bytes], args: argparse.Namespace
) -> dict[str, float]:
    signer = DkimSigner.from_configs(configs)
    if not signer.sign(messages[0]).startswith(b"DKIM-Signature:"):
        raise SystemExit(f"bench dkim: {name}: the message was not signed")
    count = len(messages)
    result: dict[str, float] = {}
    if len(configs) == 1:
        digest = hashlib.sha256(messages[0]).digest()
        raw, single, share = paired_rates(bare_operation(signer.keys[0], digest),
                                          lambda i: signer.sign(messages[i % count]),
                                          args.seconds, args.rounds)
        result |= {f"{name}_raw_per_s": raw, f"{name}_per_s": single,
                   f"{name}_share_of_openssl": share}
    else:
        result[f"{name}_per_s"] = rate(lambda i: signer.sign(messages[i % count]), args.seconds)
    pool = SigningPool(configs, processes=args.processes)
    try:
        result[f"{name}_per_s_processes"] = uvloop.run(
            pool_rate(pool, messages, args.seconds, args.batch))
    finally:
        pool.close()
    return {k: round(v, 3 if k.endswith("_share_of_openssl") else 1) for k, v in result.items()}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    messages = build_messages(args.size)
    with tempfile.TemporaryDirectory(prefix="herald-bench-dkim-") as tmp:
        rsa_file, _ = write_keypair(DOMAIN, "rsa1", "rsa", Path(tmp))
        ed_file, _ = write_keypair(DOMAIN, "ed1", "ed25519", Path(tmp))
        rsa_key = DkimKeyConfig(DOMAIN, "rsa1", rsa_file, "rsa")
        ed_key = DkimKeyConfig(DOMAIN, "ed1", ed_file, "ed25519")
        figures: dict[str, float] = {}
        figures |= measure("rsa", [rsa_key], messages, args)
        figures |= measure("ed25519", [ed_key], messages, args)
        figures |= measure("rsa_ed25519_msgs", [rsa_key, ed_key], messages, args)
    print(
        f"DKIM signing, {len(messages[0])}-byte message, {args.processes} signing processes "
        f"(batches of {args.batch})",
        file=sys.stderr,
    )
    print(
        f"{'keys':<14}{'OpenSSL only/s':>16}{'sign()/s':>12}{'sign() % of OpenSSL':>21}"
        f"{'SigningPool/s':>19}",
        file=sys.stderr,
    )
    for name, label in (
        ("rsa", "rsa-2048"),
        ("ed25519", "ed25519"),
        ("rsa_ed25519_msgs", "both (msgs)"),
    ):
        raw = figures.get(f"{name}_raw_per_s")
        single, pooled = figures[f"{name}_per_s"], figures[f"{name}_per_s_processes"]
        share_of = figures.get(f"{name}_share_of_openssl")
        share = f"{100 * share_of:.0f} %" if share_of else "-"
        print(f"{label:<14}{raw or '-':>16}{single:>12}{share:>21}{pooled:>19}", file=sys.stderr)
    summary = {
        "bench": "dkim",
        "size": len(messages[0]),
        "processes": args.processes,
        "batch": args.batch,
        "seconds": args.seconds,
        **figures,
    }
    print(orjson.dumps(summary).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
