"""``herald bench index_memory``: memory and speed of the trigger index at scale.

Builds a :class:`~automation.index.trigger_index.TriggerIndex`
over the shipped example workflows, replicated
under other names to reach ``--workflows`` (with ``--vary``, each replica also gets other
durations, counts and thresholds, as a shop with several cart or win-back flows would), and feeds
it ``--contacts`` x ``--events-per-contact`` synthetic events in time order: product views,
page views, carts with items, orders with amounts, opens, clicks, sign-ups, contact updates and
deliveries, with realistic properties. Every contact gets one event per round; rounds are spread
over ``--span-days``. Timers are fired as the clock passes them, as the runtime would.

Prints a summary on stderr and one JSON line on stdout: resident memory (RSS) after the run and
its growth over the baseline measured before the first event, bytes per contact (and, with
``--tracemalloc``, the live Python bytes per contact, without allocator slack), ``observe()``
events/s (event generation excluded), ``fire_due()`` time, fires, and :meth:`TriggerIndex.stats`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import resource
import sys
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from automation.content.templates import TemplateSet
from automation.index.trigger_index import IndexEvent, TriggerIndex
from automation.loading.loader import load_workflows
from automation.model import definitions as d

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 1, 5, tzinfo=UTC)
CHUNK = 50_000
SKUS = 5000
# (event type, weight); email_delivered is watched by no example workflow: it measures the
# cost of events the index ignores.
MIX = (("product_viewed", 30), ("page_viewed", 18), ("cart_updated", 12),
       ("order_completed", 6), ("email_opened", 10), ("email_clicked", 4), ("signed_up", 4),
       ("contact_updated", 6), ("email_delivered", 10))
TIMEZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC", "Europe/London")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="herald bench index_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--events-per-contact", type=int, default=5)
    parser.add_argument("--span-days", type=float, default=2.0,
                        help="time the whole event stream covers")
    parser.add_argument("--vary", action="store_true",
                        help="give replicas other durations, counts and thresholds")
    parser.add_argument("--no-contact-views", action="store_true",
                        help="TriggerIndex(keep_contacts=False): the shape the live engine keeps "
                             "(automation/live/service.py reads contacts from Postgres)")
    parser.add_argument("--snapshot", action="store_true", help="also time snapshot/restore")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also count live Python bytes allocated (several times slower)")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after each chunk, as a runtime may do to keep the "
                             "cyclic collector off the (acyclic) index")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.contacts < 1 or args.workflows < 1 or args.events_per_contact < 1 \
            or args.span_days <= 0:
        parser.error("need --contacts, --workflows, --events-per-contact >= 1, --span-days > 0")
    return args


def rss_bytes() -> int:
    """Current resident set size (peak, from getrusage, if psutil is missing)."""
    try:
        import psutil
    except ImportError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return int(psutil.Process().memory_info().rss)


def _varied(trigger: d.Trigger, k: int) -> d.Trigger:
    if isinstance(trigger, d.AbsenceTrigger):
        return dataclasses.replace(trigger, within_seconds=trigger.within_seconds * (k + 1))
    if isinstance(trigger, d.CountTrigger):
        return dataclasses.replace(trigger, at_least=trigger.at_least + k)
    if isinstance(trigger, d.InactivityTrigger):
        return dataclasses.replace(trigger, period_seconds=trigger.period_seconds + k * 30 * 86400)
    if isinstance(trigger, d.MilestoneTrigger):
        return dataclasses.replace(trigger, threshold=trigger.threshold * (k + 1))
    return trigger


def replicate(examples: Sequence[d.Workflow], count: int, vary: bool) -> list[d.Workflow]:
    result = []
    for i in range(count):
        base = examples[i % len(examples)]
        k = i // len(examples)
        if k == 0:
            result.append(base)
            continue
        trigger = _varied(base.trigger, k) if vary else base.trigger
        result.append(dataclasses.replace(base, name=f"{base.name}-{k}",
                                          version=f"{base.version}-{k}", trigger=trigger))
    return result


def _item(rng: random.Random, contact: int) -> dict[str, Any]:
    sku = (contact * 7 + rng.randrange(4)) % SKUS
    return {"sku": f"SKU-{sku:05d}", "name": f"Product {sku}", "price": 5 + sku % 200 + 0.99,
            "quantity": 1 + rng.randrange(2),
            "image_url": f"https://shop.example.com/img/{sku}.jpg"}


def properties(rng: random.Random, kind: str, contact: int, serial: int) -> dict[str, Any]:
    if kind == "product_viewed":
        item = _item(rng, contact)
        return {"sku": item["sku"], "name": item["name"], "price": item["price"],
                "url": f"https://shop.example.com/p/{item['sku']}"}
    if kind == "page_viewed":
        return {"url": f"https://shop.example.com/c/{rng.randrange(100)}"}
    cart = f"cart-{contact}-{serial % 3}"
    if kind == "cart_updated":
        items = [_item(rng, contact) for _ in range(1 + rng.randrange(3))]
        return {"cart_id": cart, "items": items, "currency": "EUR",
                "total": round(sum(i["price"] * i["quantity"] for i in items), 2),
                "url": f"https://shop.example.com/cart/{cart}"}
    if kind == "order_completed":
        return {"order_id": f"o-{contact}-{serial}", "cart_id": cart, "currency": "EUR",
                "amount": round(20 + rng.random() * 300, 2),
                "items": [_item(rng, contact)]}
    if kind in ("email_opened", "email_clicked", "email_delivered"):
        found = {"workflow": "welcome", "step": "welcome-1", "message_id": f"m{serial}"}
        if kind == "email_clicked":
            found["url"] = "https://shop.example.com/sale/spring"
        return found
    if kind == "contact_updated":
        return {"created": False, "changed": ["plan"], "previous": {"plan": "free"},
                "attributes": {"first_name": f"Name{contact % 977}", "plan": "pro",
                               "birthday": f"19{60 + contact % 40}-0{1 + contact % 9}-15",
                               "country": "FR"},
                "email": f"c{contact}@example.com", "timezone": TIMEZONES[contact % 5]}
    return {"source": "web"}


def events(args: argparse.Namespace) -> Iterator[list[IndexEvent]]:
    """Chunks of events in time order; round r visits every contact once (in a shuffled
    order given by a stride coprime with the number of contacts)."""
    rng = random.Random(args.seed)
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    contacts = args.contacts
    total = contacts * args.events_per_contact
    step = timedelta(days=args.span_days) / total
    stride = next(s for s in range(7919, 10**9) if _coprime(s, contacts))
    chunk: list[IndexEvent] = []
    serial = 0
    for round_ in range(args.events_per_contact):
        for j in range(contacts):
            contact = (j * stride + round_) % contacts
            kind = rng.choice(kinds)
            chunk.append(IndexEvent(f"c{contact:07d}", kind,
                                    properties(rng, kind, contact, serial),
                                    START + step * serial, serial + 1))
            serial += 1
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _coprime(a: int, b: int) -> bool:
    while b:
        a, b = b, a % b
    return a == 1


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    examples = load_workflows(ROOT / "config" / "workflows",
                              TemplateSet.load(ROOT / "config" / "templates"))
    workflows = replicate(examples, args.workflows, args.vary)
    index = TriggerIndex(workflows, keep_contacts=not args.no_contact_views)
    gc.collect()
    baseline = rss_bytes()
    if args.tracemalloc:
        tracemalloc.start()
    observe_seconds = timer_seconds = 0.0
    fires = timer_fires = fed = 0
    last = START
    for chunk in events(args):
        started = time.perf_counter()
        for event in chunk:
            fires += len(index.observe(event))
        observe_seconds += time.perf_counter() - started
        fed += len(chunk)
        last = chunk[-1].occurred_at
        started = time.perf_counter()
        timer_fires += len(index.fire_due(last))
        timer_seconds += time.perf_counter() - started
        del chunk
        if args.gc_freeze:
            gc.freeze()
    gc.unfreeze()
    started = time.perf_counter()
    gc.collect()  # what one full collection of this heap costs (a pause on the event loop)
    gc_seconds = time.perf_counter() - started
    rss = rss_bytes()
    traced = tracemalloc.get_traced_memory()[0] if args.tracemalloc else None
    tracemalloc.stop()
    stats = index.stats()
    result: dict[str, Any] = {
        "contacts": args.contacts, "workflows": len(workflows), "vary": args.vary,
        "gc_freeze": args.gc_freeze,
        "contact_views": not args.no_contact_views, "events": fed,
        "rss_bytes": rss, "rss_baseline_bytes": baseline, "index_rss_bytes": rss - baseline,
        "bytes_per_contact": round((rss - baseline) / max(1, stats["contacts"])),
        "traced_bytes_per_contact": None if traced is None else round(
            traced / max(1, stats["contacts"])),
        "observe_events_per_s": round(fed / observe_seconds),
        "observe_us_per_event": round(observe_seconds / fed * 1e6, 2),
        "event_fires": fires, "timer_fires": timer_fires,
        "fire_due_seconds": round(timer_seconds, 3), "gc_full_seconds": round(gc_seconds, 2),
        "next_due": str(index.next_due()), "clock": str(last), "stats": stats}
    if args.snapshot:
        started = time.perf_counter()
        data = index.snapshot()
        result["snapshot_bytes"] = len(data)
        result["snapshot_seconds"] = round(time.perf_counter() - started, 2)
        del index
        gc.collect()
        started = time.perf_counter()
        TriggerIndex.restore(data, workflows)
        result["restore_seconds"] = round(time.perf_counter() - started, 2)
    print(f"{fed:,} events, {stats['contacts']:,} contacts, {len(workflows)} workflows: "
          f"{result['index_rss_bytes'] / 2**20:,.0f} MiB over baseline "
          f"({result['bytes_per_contact']} B/contact), RSS {rss / 2**20:,.0f} MiB; "
          f"observe {result['observe_events_per_s']:,} events/s", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
