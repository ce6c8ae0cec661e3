"""herald bench e2e, compare-postfix and report at a tiny scale: what they print, what the sink
got, the report's files, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench import postfix
from bench.fault_sink import bench_subject, parse_seq
from bench.sizing import Load, measured_from_e2e, recommend
from herald import cli

REPO = Path(__file__).resolve().parent.parent
needs_postfix = pytest.mark.skipif(
    not postfix.installed() or os.geteuid() != 0,
    reason="needs Postfix's smtp-sink/smtp-source and root (CI installs them: .ci/run)")
EVENTS = 20  # --rate 20 --duration 1
# Seed 2's first 20 draws hold at least two 550s and two 451s at these shares (every message
# is attempted at least once, so those draws are all used): bounces and retries both happen.
E2E_ARGS = ("--rate", "20", "--duration", "1", "--warmup", "0", "--tempfail", "0.2",
            "--permfail", "0.1", "--retry-initial", "1s", "--seed", "2", "--no-progress",
            "--drain-timeout", "90")


def bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "herald.cli", "bench", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def json_line(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert len(lines) == 1, output
    value: dict[str, Any] = json.loads(lines[0])
    return value


@pytest.fixture(scope="module")
def e2e_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, list[Any]]:
    directory = tmp_path_factory.mktemp("e2e")
    record = directory / "sink.jsonl"
    result = bench("e2e", *E2E_ARGS, "--sink-record", str(record))
    assert result.returncode == 0, result.stderr[-3000:]
    saved = directory / "e2e.jsonl"
    saved.write_text(result.stdout)
    answers = [json.loads(line) for line in record.read_text().splitlines()]
    return json_line(result.stdout), saved, answers


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    if not postfix.installed() or os.geteuid() != 0:
        pytest.skip("needs Postfix and root")
    result = bench("compare-postfix", "--messages", "10", "--sessions", "2", "--dump",
                   "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    saved = tmp_path_factory.mktemp("compare") / "compare.jsonl"
    saved.write_text(result.stdout)
    return json_line(result.stdout), saved


def test_the_bench_subject_is_what_the_sink_reads_back() -> None:
    subject = bench_subject(17, 1733110000.25)
    message = f"From: a@b.test\r\nSubject: {subject}\r\n\r\nSubject: herald-bench seq=9 t=1\r\n"
    assert parse_seq(message.encode()) == 17  # the header, never a line of the body
    assert parse_seq(b"Subject: other\r\n\r\n") is None
    template = (REPO / "bench/e2e_config/templates/bench-send/subject.txt").read_text()
    assert template.strip() == "herald-bench seq={{ event.seq }} t={{ event.intended }}"


def test_e2e_delivers_each_event_once_and_reports_every_part(
        e2e_run: tuple[dict[str, Any], Path, list[Any]]) -> None:
    result, _saved, answers = e2e_run
    assert result["bench"] == "e2e"
    assert result["events_scheduled"] == result["events_acknowledged"] == EVENTS
    assert result["http_statuses"] == {"202": EVENTS} and result["http_errors"] == 0
    # The sink: every event's message answered 250 exactly once, or 550 (never both).
    assert all(answer["seq"] is not None for answer in answers)  # nothing but bench mail
    accepted = [a["seq"] for a in answers if a["code"] == 250]
    bounced = {a["seq"] for a in answers if a["code"] == 550}
    deferred = [a["seq"] for a in answers if a["code"] == 451]
    assert len(accepted) == len(set(accepted))
    assert set(accepted) | bounced == set(range(EVENTS)) and not set(accepted) & bounced
    assert len(bounced) >= 2 and len(deferred) >= 2
    assert set(deferred) <= set(accepted) | bounced  # every deferred message was retried
    assert (result["sends"], result["bounced"], result["deferrals"]) == (
        len(accepted), len(bounced), len(deferred))
    assert result["duplicates_at_sink"] == result["other_messages_at_sink"] == 0
    assert result["unanswered"] == 0 and result["drained"] is True
    # Herald's queue agrees with the sink.
    assert result["queue_states"] == {"delivered": len(accepted), "bounced": len(bounced)}
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    # The two stages (joined on the queue's created_at) add up to the whole.
    stages = result["to_enqueue_ms"]["p50"], result["enqueue_to_250_ms"]["p50"]
    assert all(stage is not None and stage >= 0 for stage in stages)
    assert result["to_enqueue_ms"]["max"] <= latency["max"]
    assert set(result["parts"]) == {"herald-http", "herald-automation", "herald-mta",
                                    "postgres", "sink", "load-generator"}
    for part in result["parts"].values():
        assert part["cpu_s"] >= 0 and part["peak_memory_mib"] > 0
        assert part["peak_processes"] >= 1
    assert result["parts"]["postgres"]["peak_processes"] > 1  # the backends are counted
    database = result["database"]
    assert database["bytes_after"] == database["bytes_before"] + database["growth_bytes"]
    # The growth split by how long [retention] keeps it: the run's events (and their ids) and
    # its messages' bodies were measured; the rest (rows, attempts...) is what is left.
    by_class = database["growth_by_class"]
    assert set(by_class) == {"events", "message_bodies", "kept"}
    assert by_class["events"] > 0 and by_class["message_bodies"] > 0
    assert sum(by_class.values()) == database["growth_bytes"]
    assert database["wal_bytes"] > 0 and database["wal_syncs"] > 0
    assert result["sends_per_s"] >= 0 and result["dkim"] == "rsa-sha256 2048"


@needs_postfix
def test_compare_postfix_relays_the_same_messages_through_each_mta(
        compare_run: tuple[dict[str, Any], Path]) -> None:
    result, _saved = compare_run
    assert result["bench"] == "compare-postfix" and result["sink"] == "smtp-sink"
    rows = {row["mta"]: row for row in result["rows"]}
    assert rows["herald"]["dkim"] == "rsa-sha256 2048" and rows["postfix"]["dkim"] is None
    # Counted at the sink: each MTA delivered exactly the 10 messages, signed only where
    # the row says so.
    assert (rows["herald"]["sink_received"], rows["herald"]["sink_signed"]) == (10, 10)
    assert (rows["postfix"]["sink_received"], rows["postfix"]["sink_signed"]) == (10, 0)
    assert rows["herald"]["delivered"] == rows["postfix"]["delivered"] == 10
    if "postfix+opendkim" in rows:
        assert (rows["postfix+opendkim"]["sink_received"],
                rows["postfix+opendkim"]["sink_signed"]) == (10, 10)
        assert result["notes"] == []
    else:
        assert any("OpenDKIM is not installed" in note for note in result["notes"])
    for row in result["rows"]:
        assert row["messages_per_s"] > 0 and row["sessions"] == 2
        assert row["runs_messages_per_s"] == [row["messages_per_s"]]
    (ratio,) = result["ratios"]
    assert ratio["herald_to_postfix"] == round(
        rows["herald"]["messages_per_s"] / rows["postfix"]["messages_per_s"], 2)


@needs_postfix
def test_report_from_saved_results_writes_markdown_and_charts(
        tmp_path: Path, e2e_run: tuple[dict[str, Any], Path, list[Any]],
        compare_run: tuple[dict[str, Any], Path]) -> None:
    out = tmp_path / "report"
    result = bench("report", "--daily-sends", "1000000", "--peak-factor", "5", "--out",
                   str(out), "--from-results", str(e2e_run[1]), str(compare_run[1]))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json_line(result.stdout)
    expected = recommend(Load(1_000_000, 5, 30), measured_from_e2e(e2e_run[0]))
    assert summary["recommendation"] == expected.as_dict()
    text = (out / "report.md").read_text()
    assert "## Recommendation" in text and f"| cores | **{expected.cores}** |" in text
    assert "57.9 sends/s at peak" in text and "| herald | rsa-sha256 2048 | 2 |" in text
    for name in ("throughput.png", "latency.png", "cpu.png", "memory.png"):
        assert f"]({name})" in text
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(out / name) as image:
            image.verify()


def saved_e2e(directory: Path, by_class: dict[str, int] | None = None) -> Path:
    """A saved e2e result (10,000 database bytes per send; split as given, or not at all as
    e2e recorded it before the split)."""
    part = {"cpu_s": 2.0, "peak_memory_mib": 50.0, "memory": "pss", "peak_processes": 1}
    e2e = {"bench": "e2e", "sends": 1000, "offered_events_per_s": 50, "duration_s": 20,
           "sends_per_s": 49.0, "bounced": 0, "deferrals": 0,
           "latency_ms": {"p50": 40.0, "p95": 90.0, "p99": 150.0, "max": 200.0},
           "parts": {"herald-http": part, "herald-automation": {**part, "cpu_s": 3.0},
                     "herald-mta": {**part, "cpu_s": 20.0}, "postgres": {**part, "cpu_s": 4.0}},
           "database": {"growth_bytes": 10_000_000, "wal_bytes": 8_192_000, "wal_syncs": 2500}}
    if by_class is not None:
        e2e["database"]["growth_by_class"] = by_class  # type: ignore[index]
    saved = directory / "e2e.jsonl"
    saved.write_text("a summary line\n" + json.dumps(e2e) + "\n")
    return saved


def test_report_without_compare_results_still_sizes(tmp_path: Path) -> None:
    saved = saved_e2e(tmp_path)  # recorded before e2e split the database's growth
    result = bench("report", "--daily-sends", "1000000", "--peak-factor", "5", "--out",
                   str(tmp_path / "out"), "--from-results", str(saved))
    assert result.returncode == 0, result.stderr
    # 0.029 CPU s per send x 57.87/s / 0.5 = 3.36 -> 4 cores (tests/test_bench_sizing.py).
    assert json_line(result.stdout)["recommendation"]["cores"] == 4
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| cores | **4** |" in text and "no throughput chart" in text
    # 49 of 50 sends/s kept up, but the planned 57.9/s peak was never demonstrated.
    (warning,) = json_line(result.stdout)["warnings"]
    assert "best rate a run kept up with was 49" in warning and warning in text
    assert not (tmp_path / "out" / "throughput.png").exists()
    # No split: the old single figure, 10,000 B x 1e6 x 30 days x 2 -> 559 GiB, with a note.
    recommendation = json_line(result.stdout)["recommendation"]
    assert recommendation["disk_gib"] == 559 and recommendation["retention_days"] == 30
    (note,) = recommendation["notes"]
    assert "no per-class split" in note and f"> **Note:** {note}." in text
    assert f"note: {note}" in result.stderr
    assert "| disk | **559 GiB** | database bytes per send x sends x 30 days x 2 |" in text


def test_report_disk_follows_the_retention_days_given(tmp_path: Path) -> None:
    saved = saved_e2e(tmp_path, {"events": 2_000_000, "message_bodies": 5_000_000,
                                 "kept": 3_000_000})
    result = bench("report", "--daily-sends", "1000000", "--out", str(tmp_path / "out"),
                   "--from-results", str(saved), "--events-days", "90", "--bodies-days", "0",
                   "--horizon-days", "180", "--no-compare")
    assert result.returncode == 0, result.stderr
    recommendation = json_line(result.stdout)["recommendation"]
    # events 2,000 B x 1e6 x 90 days = 1.8e11; bodies kept forever: 5,000 x 1e6 x 180 (the
    # horizon) = 9e11; the rest 3,000 x 1e6 x 180 = 5.4e11; x 2 = 3.24e12 B = 3017.5 GiB.
    assert (recommendation["events_days"], recommendation["bodies_days"],
            recommendation["horizon_days"]) == (90, 0, 180)
    assert recommendation["disk_exact_gib"] == pytest.approx(3017.485, abs=1e-3)
    assert recommendation["disk_gib"] == 3018 and recommendation["notes"] == []
    text = (tmp_path / "out" / "report.md").read_text()
    assert "events kept 90 days, message bodies forever" in text
    assert "2,000 B per send x 1,000,000/day x 90 days ([retention] events 90d) = 167.6 GiB" \
        in text
    assert ("5,000 B per send x 1,000,000/day x 180 days ([retention] message_bodies = 0 keeps "
            "them forever: the 180-day planning horizon) = 838.2 GiB") in text
    assert "- disk: (167.6 + 838.2 + 502.9) GiB x 2 = 3017.5 GiB -> 3018 GiB after 180 days" \
        in text
    assert "| disk | **3018 GiB** |" in text


def test_report_takes_the_retention_of_a_config_and_notes_an_unused_retention_days(
        tmp_path: Path) -> None:
    saved = saved_e2e(tmp_path, {"events": 2_000_000, "message_bodies": 5_000_000,
                                 "kept": 3_000_000})
    config = tmp_path / "herald.toml"
    config.write_text('[retention]\nevents = "60d"\nmessage_bodies = "7d"\n')
    result = bench("report", "--daily-sends", "1000000", "--out", str(tmp_path / "out"),
                   "--from-results", str(saved), "--config", str(config), "--bodies-days",
                   "14", "--retention-days", "30")
    assert result.returncode == 0, result.stderr
    recommendation = json_line(result.stdout)["recommendation"]
    # The config's events (60 days); --bodies-days wins over its message_bodies (7 days).
    assert (recommendation["events_days"], recommendation["bodies_days"]) == (60, 14)
    (note,) = recommendation["notes"]
    assert note.startswith("--retention-days is only for results without the per-class split")


@pytest.mark.parametrize("args, message", [
    (("e2e", "--rate", "-5"), "--rate"),
    (("e2e", "--rate", "ten"), "--rate"),
    (("e2e", "--tempfail", "0.6", "--permfail", "0.5"), "--tempfail + --permfail"),
    (("e2e", "--retry-initial", "soon"), "--retry-initial"),
    (("compare-postfix", "--sessions", "0"), "--sessions"),
    (("compare-postfix", "--messages", "-1"), "--messages"),
    (("report", "--daily-sends", "-1", "--out", "x"), "--daily-sends"),
    (("report", "--daily-sends", "1000", "--peak-factor", "0.5", "--out", "x"),
     "--peak-factor"),
    (("report", "--daily-sends", "1000", "--out", "x", "--from-results", "/nonexistent.jsonl"),
     "no such file"),
    (("report", "--daily-sends", "1000", "--events-days", "-1", "--out", "x"), "--events-days"),
    (("report", "--daily-sends", "1000", "--bodies-days", "a month", "--out", "x"),
     "--bodies-days"),
    (("report", "--daily-sends", "1000", "--horizon-days", "0", "--out", "x"),
     "--horizon-days"),
    (("report", "--daily-sends", "1000", "--retention-days", "0", "--out", "x"),
     "--retention-days"),
    (("report", "--daily-sends", "1000", "--config", "/nonexistent.toml", "--out", "x"),
     "--config: config file /nonexistent.toml does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", *args])  # in-process: parsing fails before anything starts
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err
    assert captured.err.startswith(f"herald bench {args[0]}: error: ")
    assert captured.out == ""


def test_results_without_an_e2e_run_are_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "mta.jsonl"
    saved.write_text(json.dumps({"bench": "mta", "messages_per_s": 900.0}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "report", "--daily-sends", "1000", "--out", str(tmp_path / "out"),
                  "--from-results", str(saved)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and "no herald bench e2e result" in error
