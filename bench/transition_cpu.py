"""``herald bench transition-cpu``: the automation process's own CPU per run transition that sends
mail, in this process, without a database.

Each transition does the pure work :class:`automation.stores.postgres.PgStore` does around its
statements, in the same order and with the same functions: the run's re-entry key and entry
log row; the run's inputs (engagement of the run, recommendations, the double opt-in link, the
unsubscribe link of the step's message); :func:`automation.runtime.interpreter.interpret` (send
guards, the template context with its screened links, rendering subject, text and HTML); the
message (its id, click tracking and open pixel, List-Unsubscribe, composing the MIME bytes); the
queue row's own work (VERP bounce address, the recipient's suppression key); the decision-log
rows. Every transition is a different run and contact, so nothing is served from a cache that a
live engine would not hit either.

Timed in CPU seconds of this process (``time.process_time``), median of ``--repeats`` passes of
``--transitions`` each, after a warm-up. Beside it, in the same run and in alternating slices of
50 transitions, a fixed reference workload (pure-Python dict, string and HMAC work, 100 rounds
per transition) gives ``share_of_reference``, transition CPU over reference CPU: the figure to
compare between runs on a shared, loaded machine, where the absolute microseconds move with the
load. A last, instrumented pass splits the time into stages.

``--workflow e2e``: the bench e2e workflow (one transactional text message of ~3 KB, no HTML);
``--workflow welcome``: the shipped welcome series' first step (layout, partials, text and HTML
parts, click tracking of its links and an open pixel).

Prints a table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import hmac
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from automation.content.link_policy import normalize_domains
from automation.content.links import list_unsubscribe, send_message_id, unsubscribe_url
from automation.content.recommend import engagement, recommend
from automation.loading.catalog import Catalog
from automation.runtime.interpreter import Policy, RunInputs, interpret
from automation.runtime.runs import Run
from automation.stores.memory import reentry_key_text
from automation.stores.transitions import log_row
from bench.args import OneLineParser, positive_int
from engine import gc_policy
from engine.link_keys import LinkKeys
from engine.privacy.consent_tokens import confirm_url
from mta.compose import compose
from mta.queue.enqueue import OutboundMessage
from mta.queue.return_paths import bounce_address
from mta.suppression.addresses import normalise_lenient
from mta.tracking.rewrite import track_html

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = {
    "e2e": (REPO / "bench" / "e2e_config", "bench-send"),
    "welcome": (REPO / "config", "welcome"),
}
PUBLIC_URL = "https://mail.bench.test"
BOUNCE_DOMAIN = "bounce.bench.test"
FROM = "Bench <news@bench.test>"
KEYS = LinkKeys.parse(["k1:bench-link-key-0123456789"])
BOUNCE_SECRET = b"bench-bounce-secret-0123456789ab"
CHUNK = 50  # transitions between two slices of the reference workload
REFERENCE_ROUNDS = 100  # rounds of the reference workload per transition


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="herald bench transition-cpu", description=__doc__)
    parser.add_argument("--workflow", choices=sorted(WORKFLOWS), default="e2e")
    parser.add_argument("--transitions", type=positive_int, default=3000)
    parser.add_argument("--repeats", type=positive_int, default=3)
    return parser.parse_args(argv)


@dataclass(slots=True)
class Stages:
    """CPU seconds per stage, summed over a pass."""

    inputs: float = 0.0
    interpret: float = 0.0
    message: float = 0.0
    queue_and_log: float = 0.0


class Transitions:
    """One workflow's sends, done as the Postgres store does them minus its statements."""

    def __init__(self, workflow_name: str) -> None:
        root, self.name = WORKFLOWS[workflow_name]
        self.catalog = Catalog.load(root / "workflows", root / "templates")
        self.workflow = self.catalog.current[self.name]
        entry = self.catalog.version(self.name, self.workflow.version)
        assert entry is not None
        self.program = entry[1]
        self.policy = Policy(self.catalog.templates, frequency_cap=1000, allowed_window=None,
                             link_domains=normalize_domains(["shop.example.com"]))
        self.trigger = "bench_order" if workflow_name == "e2e" else "signed_up"

    def one(self, number: int, stages: Stages | None = None) -> int:
        """Transition ``number`` (a run and contact of its own); returns the body's size."""
        clock = time.process_time
        started = clock() if stages else 0.0
        now = datetime.now(UTC)
        properties: dict[str, Any] = {"seq": number, "intended": 1_764_650_000.0 + number}
        contact_id, email = f"bench-{number}", f"bench{number}@example.test"
        logs: list[tuple[Any, ...]] = []
        # _begin: the re-entry key, the run row, the "entered" log entry
        key = reentry_key_text(self.workflow.reentry.key_of(properties))
        run = Run(number, self.name, self.workflow.version, contact_id, key, f"entry-{number}",
                  "running", 0, now, self.trigger, properties)
        logs.append(log_row(now, run.workflow, contact_id, run.id, None, "entered",
                            self.trigger))
        # _inputs
        since: list[tuple[str, dict[str, Any]]] = []
        opened, clicked = engagement(since, run.workflow, run.id)
        opened_all, clicked_all = engagement(since, run.workflow, run.id, include_machine=True)
        normalise_lenient(email)
        consent_link = confirm_url(PUBLIC_URL, KEYS, contact_id, now)
        run_id = run.id

        def link(step_id: str) -> str:
            return unsubscribe_url(PUBLIC_URL, KEYS, send_message_id(run_id, step_id))

        inputs = RunInputs(email, {"first_name": "Ann", "plan": "pro"}, None, (), 0, opened,
                           clicked, since, recommend([], properties, 4), link, opened_all,
                           clicked_all, None, consent_link)
        if stages:
            stages.inputs += clock() - started
            started = clock()
        effects = interpret(run, self.program, self.workflow, inputs, None, now, self.policy)
        if stages:
            stages.interpret += clock() - started
            started = clock()
        size = 0
        messages = []
        for send in effects.sends:  # _send
            message_id = send_message_id(run.id, send.step_id)
            html, tracked_links = send.message.html, tuple[str, ...]()
            if html is not None:
                tracked = track_html(html, PUBLIC_URL, KEYS, message_id)
                html, tracked_links = tracked.html, tracked.links
            composed = compose({
                "from": FROM, "to": inputs.email, "subject": send.message.subject,
                "text": send.message.text, "html": html,
                "headers": list_unsubscribe(PUBLIC_URL, BOUNCE_DOMAIN, KEYS, message_id)}, now)
            messages.append(OutboundMessage(
                composed.header_from, composed.recipient, composed.body, contact_id,
                (run.workflow,), {"workflow": run.workflow, "step": send.step_id,
                                  "run_id": run.id, "template": send.template,
                                  "transactional": send.transactional},
                "automation", f"run:{run.id}:{send.step_id}", id=message_id,
                tracked_links=tracked_links))
            size += len(composed.body)
        if stages:
            stages.message += clock() - started
            started = clock()
        for message in messages:  # enqueue's own work: the row
            assert message.id is not None
            recipient = str(message.recipient)
            (message.id, str(message.header_from),
             bounce_address(BOUNCE_SECRET, message.id, BOUNCE_DOMAIN), recipient,
             message.recipient.domain, message.contact_id, list(message.tags), message.metadata,
             normalise_lenient(recipient))
        for step, action, detail in effects.log:
            logs.append(log_row(now, run.workflow, contact_id, run.id, step, action, detail))
        if stages:
            stages.queue_and_log += clock() - started
        return size


def reference_workload(rounds: int) -> None:
    """A fixed mix of what a transition does (dicts, f-strings, HMACs, a small sort), to
    measure how fast this machine runs Python right now."""
    secret = b"reference-secret"
    for number in range(rounds):
        tags = ["a", "b", "c"]
        record = {"id": number, "name": f"contact-{number}", "tags": tags}
        text = f"{record['name']}:{record['id']}:{','.join(tags)}"
        hmac.digest(secret, text.encode(), "sha256")
        sorted(record)


def run(args: argparse.Namespace) -> dict[str, Any]:
    gc_policy.tune()  # as the automation role does
    transitions = Transitions(args.workflow)
    size = transitions.one(0)
    for number in range(1, 200):  # warm-up: imports, template caches, code paths
        transitions.one(number)
    count, clock = args.transitions, time.process_time
    per_transition, reference = [], []
    number = 1_000
    for _repeat in range(args.repeats):
        # Transitions and the reference alternate in small slices, so both see the same load.
        spent = spent_reference = 0.0
        done = 0
        while done < count:
            started = clock()
            for _ in range(CHUNK):
                transitions.one(number)
                number += 1
            spent += clock() - started
            started = clock()
            reference_workload(CHUNK * REFERENCE_ROUNDS)
            spent_reference += clock() - started
            done += CHUNK
        per_transition.append(spent / done)
        reference.append(spent_reference / done)
    stages = Stages()
    for _ in range(count):
        transitions.one(number, stages)
        number += 1
    shares = [t / r for t, r in zip(per_transition, reference, strict=True)]
    return {"bench": "transition-cpu", "workflow": args.workflow, "transitions": count,
            "repeats": args.repeats, "message_bytes": size,
            "us_per_transition": round(statistics.median(per_transition) * 1e6, 1),
            "us_per_transition_runs": [round(v * 1e6, 1) for v in per_transition],
            "reference_us": round(statistics.median(reference) * 1e6, 1),
            "share_of_reference": round(statistics.median(shares), 3),
            "shares_of_reference_runs": [round(v, 3) for v in shares],
            "stages_us": {name: round(getattr(stages, name) / count * 1e6, 1)
                          for name in Stages.__slots__}}


def main(argv: list[str]) -> int:
    result = run(parse_args(argv))
    print(f"transition-cpu ({result['workflow']}, {result['message_bytes']} B message): "
          f"{result['us_per_transition']} us of CPU per transition (runs "
          f"{result['us_per_transition_runs']}); reference workload {result['reference_us']} us "
          f"per transition (transition/reference {result['share_of_reference']}, runs "
          f"{result['shares_of_reference_runs']}); stages (us, instrumented pass): "
          f"{result['stages_us']}", file=sys.stderr)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
