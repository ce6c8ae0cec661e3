"""Bounce and complaint parsing: hand-built DSN, ARF and auto-reply messages, plain-text bounce
formats, malformed and hostile input (never an exception), and ``herald bounce parse``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.bounces.parse import parse_report
from mta.bounces.report import RecipientResult, Report

VERP = "b-0001.abcdef@bounce.shop.example"


def _dsn(blocks: str, *, human: str = "Your message could not be delivered.",
         original: str | None = None) -> bytes:
    original = original if original is not None else (
        f"Return-Path: <{VERP}>\nMessage-ID: <m1@shop.example>\nTo: ann@example.org\n"
        "From: Shop <news@shop.example>\nSubject: Hello\n")
    return (
        "From: MAILER-DAEMON@mx.example.org\n"
        f"To: {VERP}\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain\n\n"
        f"{human}\n\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.org\n\n"
        f"{blocks}\n"
        "--B\nContent-Type: text/rfc822-headers\n\n"
        f"{original}\n"
        "--B--\n"
    ).encode()


def test_dsn_with_an_unknown_user_and_a_full_mailbox() -> None:
    report = parse_report(_dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected:\n"
        "    User unknown in virtual mailbox table\n\n"
        "Final-Recipient: rfc822; bob@example.org\nAction: failed\nStatus: 5.2.2\n"
        "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n"))
    assert report == Report(
        "bounce",
        (RecipientResult("ann@example.org", "5.1.1", 550, True, "mailbox_unknown"),
         RecipientResult("bob@example.org", "5.2.2", 552, False, "mailbox_full")),
        None, "<m1@shop.example>", VERP, "ann@example.org")


def test_dsn_policy_block_and_delay_never_suppress() -> None:
    report = parse_report(_dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.7.1\n"
        "Diagnostic-Code: smtp; 550 5.7.1 Message rejected as spam\n\n"
        "Final-Recipient: rfc822; bob@example.org\nAction: delayed\nStatus: 4.1.1\n"
        "Diagnostic-Code: smtp; 450 4.1.1 User unknown, try later\n"))
    assert [(r.hard, r.reason) for r in report.recipients] == [
        (False, "spam_content"), (False, "mailbox_unknown")]


def test_dsn_prefers_original_recipient_and_reads_status_comment() -> None:
    report = parse_report(_dsn(
        "Original-Recipient: rfc822;Ann@Example.org\nFinal-Recipient: rfc822; ann@mbox.example\n"
        "Action: failed\nStatus: 5.1.2 (bad destination system: no such domain)\n"))
    (recipient,) = report.recipients
    assert recipient.address == "Ann@Example.org"
    assert (recipient.status, recipient.hard, recipient.reason) == ("5.1.2", True, "domain_unknown")


def test_dsn_rejection_after_data_with_generic_status_does_not_suppress() -> None:
    report = parse_report(_dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 550 Unknown user ann@example.org\n",
        human="<ann@example.org>: host mx.example.org said: 550 Unknown user\n"
              "    ann@example.org (in reply to end of DATA command)"))
    assert report.recipients[0].hard is False
    assert report.recipients[0].reason == "rejected_after_data"


def _sendmail_transcript(address: str, transcript: str, status: str = "5.0.0") -> bytes:
    diagnostic = transcript.split("<<< ", 2)[1].splitlines()[0]
    return _dsn(f"Final-Recipient: RFC822; {address}\nAction: failed\nStatus: {status}\n"
                f"Diagnostic-Code: SMTP; {diagnostic}\n",
                human="   ----- The following addresses had permanent fatal errors -----\n"
                      f"<{address}>\n    (reason: {diagnostic})\n\n"
                      "   ----- Transcript of session follows -----\n"
                      f"... while talking to mx.example.org.:\n{transcript}")


def test_pipelined_rcpt_reply_shown_after_data_still_suppresses() -> None:
    """Sendmail prints pipelined RCPT replies after ">>> DATA"; a DATA refused for want of
    recipients proves the reply before it was the RCPT reply."""
    report = parse_report(_sendmail_transcript(
        "ann@example.org",
        ">>> DATA\n<<< 550 5.5.0 Invalid recipient. LPN007_416\n"
        "550 5.1.1 <ann@example.org>... User unknown\n<<< 554 5.5.1 Error: no valid recipients\n",
        status="5.5.0"))
    assert (report.recipients[0].hard, report.recipients[0].reason) == (True, "mailbox_unknown")
    # the same reply with DATA itself refused: after DATA, not proof of a dead address
    report = parse_report(_sendmail_transcript(
        "ann@example.org", ">>> DATA\n<<< 550 Unknown user ann@example.org\n"
                           "554 5.0.0 Service unavailable\n"))
    assert (report.recipients[0].hard, report.recipients[0].reason) == (False,
                                                                         "rejected_after_data")


def test_yahoo_recipient_check_at_data_suppresses() -> None:
    report = parse_report(_sendmail_transcript(
        "ann@yahoo.com", ">>> DATA\n<<< 554 delivery error: dd This user doesn't have a "
                         "yahoo.com account (ann@yahoo.com) [0] - mta1.mail.ne1.yahoo.com\n"
                         "554 5.0.0 Service unavailable\n"))
    assert (report.recipients[0].hard, report.recipients[0].reason) == (True, "mailbox_unknown")


def test_japanese_carriers_user_unknown_needs_the_rcpt_phase() -> None:
    """docomo and au answer mail their reception filters refuse with "user unknown"."""
    for address, diagnostic in (("ann@docomo.ne.jp", "550 Unknown user ann@docomo.ne.jp"),
                                ("ann@ezweb.ne.jp", "550 : User unknown")):
        report = parse_report(_dsn(
            f"Final-Recipient: rfc822; {address}\nAction: failed\nStatus: 5.0.0\n"
            f"Diagnostic-Code: smtp; {diagnostic}\n"))
        assert (report.recipients[0].hard, report.recipients[0].reason) == (False,
                                                                             "carrier_filter")
    report = parse_report(_dsn(
        "Final-Recipient: rfc822; ann@ezweb.ne.jp\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 550 <ann@ezweb.ne.jp>: User unknown\n",
        human="<ann@ezweb.ne.jp>: host lsean.ezweb.ne.jp said: 550 <ann@ezweb.ne.jp>: User\n"
              "    unknown (in reply to RCPT TO command)"))
    assert report.recipients[0].hard is True
    report = parse_report(_dsn(
        "Final-Recipient: rfc822; ann@au.com\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <ann@au.com>: User unknown\n"))
    assert report.recipients[0].hard is True


def test_rejection_naming_another_address_does_not_suppress_the_recipient() -> None:
    """An alias or forwarding target that is unknown says nothing about the alias."""
    report = parse_report(_dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <ann.old@mail.example.net>... User unknown\n"))
    assert (report.recipients[0].hard, report.recipients[0].reason) == (False, "other_address")
    report = parse_report(_dsn(
        "Final-Recipient: rfc822; Ann+news@Example.org\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <ann@example.org>... User unknown\n"))
    assert report.recipients[0].hard is True


def test_disabled_account_is_not_suppressed() -> None:
    report = parse_report(_dsn(
        "Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.2.1\n"
        "Diagnostic-Code: smtp; 550 5.2.1 The email account that you tried to reach is"
        " disabled.\n"))
    assert (report.recipients[0].hard, report.recipients[0].reason) == (False,
                                                                         "mailbox_disabled")


def test_attached_text_file_is_not_read_as_the_notice() -> None:
    """A plain-text bounce with the original headers attached as a text file: words in those
    headers (X-Cloudmark-Analysis) must not turn "User unknown" into a blocklisting."""
    raw = (
        b"From: postmaster@mx.example.org\nTo: x@shop.example\nSubject: Delivery failure\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="M"\n\n'
        b"--M\nContent-Type: text/plain\n\n"
        b"We had trouble delivering your message.\n\nSMTP Server <mx.example.org> rejected "
        b"recipient <ann@example.org> (Error following RCPT command). It responded as follows:"
        b" [550 5.1.1 User unknown]\n\n"
        b"--M\nContent-Type: text/plain\nContent-Disposition: attachment; filename=h.txt\n\n"
        b"X-Cloudmark-Analysis: v=1.1 cv=...\nTo: ann@example.org\n"
        b"--M--\n")
    (recipient,) = parse_report(raw).recipients
    assert (recipient.address, recipient.hard, recipient.reason) == ("ann@example.org", True,
                                                                     "mailbox_unknown")


def test_arf_complaint() -> None:
    raw = (
        "From: feedback@fbl.example.net\nTo: fbl@shop.example\nSubject: complaint\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\n\n'
        "--F\nContent-Type: text/plain\n\nThis is an abuse report.\n\n"
        "--F\nContent-Type: message/feedback-report\n\n"
        "Feedback-Type: abuse\nUser-Agent: fbl/1.0\nVersion: 1\n"
        f"Original-Mail-From: <{VERP}>\nOriginal-Rcpt-To: <ann@example.org>\n"
        "Arrival-Date: Thu, 8 Mar 2024 14:00:00 +0000\n\n"
        "--F\nContent-Type: message/rfc822\n\n"
        "Message-ID: <m1@shop.example>\nTo: ann@example.org\nSubject: Hello\n\nHi\n"
        "--F--\n"
    ).encode()
    report = parse_report(raw)
    assert report.kind == "complaint"
    assert report.feedback_type == "abuse"
    assert report.recipients == (RecipientResult("ann@example.org", None, None, False,
                                                 "complaint"),)
    assert report.original_return_path == VERP
    assert report.original_message_id == "<m1@shop.example>"
    assert report.original_recipient == "ann@example.org"


def test_auto_reply_is_not_a_bounce() -> None:
    raw = (b"From: Ann <ann@example.org>\nTo: " + VERP.encode() + b"\n"
           b"Subject: Out of office\nAuto-Submitted: auto-replied\n\n"
           b"I am away until Monday; mail will not be delivered to my deputy.\n")
    report = parse_report(raw)
    assert report.kind == "auto_reply"
    assert report.recipients == (RecipientResult("ann@example.org", None, None, False,
                                                 "auto_reply"),)
    assert report.original_return_path == VERP


def test_out_of_office_by_subject_only() -> None:
    raw = b"From: ann@example.org\nTo: x@shop.example\nSubject: Automatic reply: Hello\n\nAway.\n"
    assert parse_report(raw).kind == "auto_reply"


def test_postfix_bounce_with_auto_submitted_is_still_a_bounce() -> None:
    raw = _dsn("Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n")
    raw = raw.replace(b"MIME-Version", b"Auto-Submitted: auto-replied\nMIME-Version", 1)
    assert parse_report(raw).kind == "bounce"


def test_plain_text_exim_bounce() -> None:
    raw = (
        "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\n"
        f"To: {VERP}\nSubject: Mail delivery failed: returning message to sender\n\n"
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  ann@example.org\n"
        "    SMTP error from remote mail server after RCPT TO:<ann@example.org>:\n"
        "    host mx.example.org [192.0.2.1]: 550 5.1.1 <ann@example.org>: User unknown\n"
        "  bob@example.org\n"
        "    SMTP error from remote mail server after RCPT TO:<bob@example.org>:\n"
        "    host mx.example.org [192.0.2.1]: 452 4.2.2 Mailbox full\n\n"
        "------ This is a copy of the message, including all the headers. ------\n\n"
        f"Return-path: <{VERP}>\nMessage-Id: <m1@shop.example>\nTo: ann@example.org\n\nHi\n"
    ).encode()
    report = parse_report(raw)
    assert report.kind == "bounce"
    assert [(r.address, r.status, r.reply_code, r.hard) for r in report.recipients] == [
        ("ann@example.org", "5.1.1", 550, True), ("bob@example.org", "4.2.2", 452, False)]
    assert report.original_return_path == VERP
    assert report.original_message_id == "<m1@shop.example>"


def test_plain_text_qmail_bounce() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\nTo: x@shop.example\nSubject: failure notice\n\n"
        b"Hi. This is the qmail-send program at mx.example.org.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n\n"
        b"<ann@example.org>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
        b"--- Below this line is a copy of the message.\n\nReturn-Path: <x@shop.example>\n"
    )
    (recipient,) = parse_report(raw).recipients
    assert (recipient.address, recipient.status, recipient.hard) == ("ann@example.org", "5.1.1",
                                                                     True)


def test_sender_rejection_at_mail_from_never_suppresses_the_recipient() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\nTo: x@shop.example\n"
        b"Subject: Mail delivery failed\n\n"
        b"The following address(es) failed:\n\n  ann@example.org\n"
        b"    SMTP error from remote mail server after MAIL FROM:<x@shop.example>:\n"
        b"    553 5.1.0 Domain of sender does not exist\n"
    )
    assert parse_report(raw).recipients[0].hard is False


# --- malformed and hostile input -----------------------------------------------------------


def test_truncated_dsn_is_unknown_or_partial_never_an_error() -> None:
    raw = _dsn("Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n"
               "Diagnostic-Code: smtp; 550 5.1.1 User unknown\n")
    for cut in range(0, len(raw), 7):
        report = parse_report(raw[:cut])
        assert report.kind in ("bounce", "unknown")
        assert all(not r.hard or r.address == "ann@example.org" for r in report.recipients)


def test_truncated_arf_never_an_error() -> None:
    raw = (
        b'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\n\n'
        b"--F\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
        b"Original-Rcpt-To: ann@example.org\n\n--F--\n"
    )
    for cut in range(len(raw)):
        assert parse_report(raw[:cut]).kind in ("complaint", "unknown", "bounce")


def test_garbage_and_empty_input_is_unknown() -> None:
    for raw in (b"", b"\x00\xff" * 100, b"\n\n\n", b"Content-Type: multipart/report\n\n--",
                "Subject: \udcff".encode("utf-8", "surrogateescape")):
        assert parse_report(raw) == Report("unknown", ())


def test_wrong_charset_and_bad_encoding_degrade() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered Mail\n"
        b"Content-Type: text/plain; charset=no-such-charset\n"
        b"Content-Transfer-Encoding: base64\n\n"
        b"PGFubkBleGFtcGxlLm9yZz46IDU1MCA1LjEuMSBVc2VyIHVua25vd24K!!!\xff\xfe\n"
    )
    report = parse_report(raw)
    assert report.kind == "bounce"
    assert report.recipients[0].address == "ann@example.org"


def test_huge_nesting_is_bounded() -> None:
    depth = 5000
    raw = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
                   for i in range(depth))
    assert parse_report(raw).kind == "unknown"
    nested = b"Content-Type: message/rfc822\n\n" * depth + b"Subject: x\n\nbody\n"
    assert parse_report(nested).kind == "unknown"


def test_oversized_input_is_cut_not_refused() -> None:
    raw = _dsn("Final-Recipient: rfc822; ann@example.org\nAction: failed\nStatus: 5.1.1\n",
               original="Subject: big\n\n" + "x" * 5_000_000)
    assert parse_report(raw).recipients[0].hard is True


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    report = parse_report(raw)
    assert report.kind in ("bounce", "complaint", "auto_reply", "unknown")
    orjson.dumps(report.to_json())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_dsn_never_raises(data: st.DataObject) -> None:
    raw = bytearray(_dsn("Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
                         "Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n"))
    for _ in range(data.draw(st.integers(1, 20))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    assert parse_report(bytes(raw)).kind in ("bounce", "complaint", "auto_reply", "unknown")


# --- the command line --------------------------------------------------------------------


def test_cli_prints_one_json_line_per_file_and_fails_for_unreadable_ones(tmp_path: Path) -> None:
    dsn = tmp_path / "dsn.eml"
    dsn.write_bytes(_dsn("Final-Recipient: rfc822; ann@example.org\nAction: failed\n"
                         "Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 User unknown\n"))
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b"\x00garbage")
    missing = tmp_path / "missing.eml"
    result = subprocess.run(
        [sys.executable, "-m", "herald.cli", "bounce", "parse", str(dsn), str(missing),
         str(junk)],
        capture_output=True, text=True, timeout=60, env={**os.environ})
    assert result.returncode == 1
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(dsn), str(junk)]
    assert lines[0]["kind"] == "bounce"
    assert lines[0]["recipients"] == [{"address": "ann@example.org", "status": "5.1.1",
                                       "reply_code": 550, "hard": True,
                                       "reason": "mailbox_unknown"}]
    assert lines[0]["feedback_type"] is None
    assert lines[1]["kind"] == "unknown" and lines[1]["recipients"] == []
    assert result.stderr.strip().splitlines() == [
        f"herald: error: cannot read {missing}: No such file or directory"]
