"""``parse_report`` over the labelled corpus (Sisimai set-of-emails, development half): agreement
on ``hard`` and on the status code per labelled recipient, on a tuning half and a held-out half
of the files (split by a hash of the file name), and the count of wrongly suppressed addresses.

Scoring rules:
- recipients are matched by position (the labels carry no addresses); a labelled recipient the
  parser did not report counts as ``hard=False`` with no status;
- ``status`` is scored only where the label holds an RFC 3463 code: Sisimai's private codes
  (``x.0.9NN``, its stand-in when a message gives none) are not scored; an empty label expects
  no status;
- a wrong suppression is ``hard=True`` where the label says the address is alive.

Known, deliberate disagreements (they are inside the floors and the budget below), each one a
place where the label follows Sisimai's mechanics rather than what the message says:
- "filtered" for a plain "user unknown" that names no SMTP phase and carries no x.1.x status
  (Postfix's "User unknown in local recipient table", Gmail's "The email account that you tried
  to reach does not exist", "No such user", Zoho's "Invalid Address"): hard for Herald. Only the
  Japanese mobile carriers, known to answer a reception filter's refusal with "user unknown",
  need the RCPT phase or an x.1.x status (``diagnosis._FILTERING_CARRIERS``);
- "filtered" where a Sendmail transcript shows the reply after ">>> DATA" but the DATA reply
  ("503 Need RCPT") proves it was a pipelined RCPT reply: hard for Herald;
- "notaccept" for OpenSMTPD's delay notice "No MX found for domain" (Action: delayed, 4.0.0,
  "only a temporary failure report"): a delay never suppresses;
- "hostunknown" for Exim's "553 <domain> does not exist" after end of data where the domain is
  the envelope sender's: the recipient is not dead;
- "mailboxfull" for a DSN whose Status and Diagnostic-Code say 5.1.1 "User Unknown" while the
  human-readable part says "Not enough disk space": Herald reads the DSN fields.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mta.bounces.parse import parse_report

# shared/ sits beside the checkout (the repository's parent folder), in CI as here.
CORPUS = next((path for path in (
    Path(__file__).resolve().parents[2] / "shared" / "corpora" / "bounces",
    Path("/work/shared/corpora/bounces"),
) if path.is_dir()), Path("/work/shared/corpora/bounces"))

HARD_FLOOR = 0.95  # measured 0.954 on all 285 (tuning half 0.953, held-out half 0.956)
STATUS_FLOOR = 0.95  # measured 0.958 on 216 scored statuses (tuning 0.964, held-out 0.953)
WRONG_SUPPRESSION_BUDGET = 12  # measured 11 of 285, all disputed labels (see above)
_PRIVATE_STATUS = re.compile(r"^\d\.0\.9\d\d$")


@dataclass
class Score:
    hard_agreed: int = 0
    hard_scored: int = 0
    status_agreed: int = 0
    status_scored: int = 0
    wrong_suppressions: int = 0

    @property
    def hard_rate(self) -> float:
        return self.hard_agreed / max(self.hard_scored, 1)

    @property
    def status_rate(self) -> float:
        return self.status_agreed / max(self.status_scored, 1)

    def line(self, name: str) -> str:
        return (f"{name}: hard {self.hard_agreed}/{self.hard_scored} = {self.hard_rate:.1%},"
                f" status {self.status_agreed}/{self.status_scored} = {self.status_rate:.1%},"
                f" wrongly suppressed {self.wrong_suppressions}")


def held_out(name: str) -> bool:
    return hashlib.sha256(name.encode()).digest()[0] % 2 == 1


def _score(names: list[str], labels: dict[str, list[dict[str, object]]],
           disagreements: list[str]) -> Score:
    score = Score()
    for name in names:
        report = parse_report((CORPUS / "eml" / name).read_bytes())
        for index, label in enumerate(labels[name]):
            got = report.recipients[index] if index < len(report.recipients) else None
            hard = got.hard if got else False
            status = got.status if got else None
            score.hard_scored += 1
            score.hard_agreed += hard == label["hard"]
            score.wrong_suppressions += hard and not label["hard"]
            expected = str(label["status"])
            status_ok = True
            if not _PRIVATE_STATUS.match(expected):
                score.status_scored += 1
                status_ok = (status or "") == expected
                score.status_agreed += status_ok
            if hard != label["hard"] or not status_ok:
                disagreements.append(f"  {name}[{index}]: label {label['reason']}"
                                     f" hard={label['hard']} status={expected!r}; got {got}")
    return score


@pytest.mark.skipif(not CORPUS.is_dir(), reason="bounce corpus not present")
def test_agreement_with_labelled_corpus(capsys: pytest.CaptureFixture[str]) -> None:
    labels = json.loads((CORPUS / "labels.json").read_text())
    names = sorted(labels)
    disagreements: list[str] = []
    tuning = _score([n for n in names if not held_out(n)], labels, disagreements)
    held = _score([n for n in names if held_out(n)], labels, disagreements)
    total = Score(*(a + b for a, b in zip(
        (tuning.hard_agreed, tuning.hard_scored, tuning.status_agreed, tuning.status_scored,
         tuning.wrong_suppressions),
        (held.hard_agreed, held.hard_scored, held.status_agreed, held.status_scored,
         held.wrong_suppressions), strict=True)))
    with capsys.disabled():
        print()
        for name, score in (("all", total), ("tuning half", tuning), ("held-out half", held)):
            print(score.line(f"bounce corpus, {name}"))
        print("\n".join(disagreements))
    assert total.hard_scored >= 250
    for score in (total, tuning, held):
        assert score.hard_rate >= HARD_FLOOR
        assert score.status_rate >= STATUS_FLOOR
    assert total.wrong_suppressions <= WRONG_SUPPRESSION_BUDGET


@pytest.mark.skipif(not CORPUS.is_dir(), reason="bounce corpus not present")
def test_corpus_kinds() -> None:
    """ARF files are complaints, RFC 3834 files auto-replies, and every other file that reports
    a failed recipient a bounce."""
    labels = json.loads((CORPUS / "labels.json").read_text())
    wrong = []
    for name, recipients in sorted(labels.items()):
        expected = ("complaint" if name.startswith("arf-") else
                    "auto_reply" if name.startswith("rfc3834-") else "bounce")
        if all(label["reason"] == "delivered" for label in recipients):
            expected = "unknown"  # a DSN reporting only success is no bounce
        report = parse_report((CORPUS / "eml" / name).read_bytes())
        if report.kind != expected:
            wrong.append(f"{name}: {report.kind}, expected {expected}")
        if report.kind == "complaint":
            assert report.feedback_type == recipients[0]["feedback_type"], name
    assert wrong == []
