"""``bench.cpu_account``: /proc parsing, the difference between two snapshots (new processes
count whole, exited ones not at all), and real CPU burnt by a real process between them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.cpu_account import (
    CpuAccounts,
    MachineTimes,
    Snapshot,
    ThreadTimes,
    difference,
    parse_machine_times,
    parse_schedstat,
    thread_times,
)
from bench.resources import Part

# Burns ``budget`` CPU-seconds of its own each time it reads a line, then says so.
SPINNER = """
import sys, time
print("ready", flush=True)
for line in sys.stdin:
    target = time.process_time() + float(line)
    while time.process_time() < target:
        pass
    print("done", flush=True)
"""


@contextmanager
def spinner() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", SPINNER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield process
    finally:
        process.kill()
        process.wait(10)


def spin(process: subprocess.Popen[str], seconds: float) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(f"{seconds}\n")
    process.stdin.flush()
    assert process.stdout.readline() == "done\n"


def test_schedstat_gives_running_and_waiting_nanoseconds() -> None:
    assert parse_schedstat("123 456 7\n") == (123, 456)
    run, wait = parse_schedstat(open(f"/proc/{os.getpid()}/schedstat").read())
    assert run > 0 and wait >= 0
    with pytest.raises(ValueError, match="two fields"):
        parse_schedstat("42")


def test_the_machine_line_splits_busy_iowait_and_idle() -> None:
    text = ("cpu  100 5 50 800 20 7 10 3 40 0\n"
            "cpu0 50 2 25 400 10 3 5 1 20 0\n")
    # busy: user, nice, system, irq, softirq, steal (guest is inside user already)
    assert parse_machine_times(text) == MachineTimes(busy=175, iowait=20, total=995)
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        parse_machine_times("cpu0 1 2 3 4 5 6 7 8\n")


def test_a_difference_counts_new_processes_whole_and_exited_ones_not_at_all() -> None:
    before = Snapshot(10.0, MachineTimes(100, 5, 400), {"server": {
        (1, 1.0): ThreadTimes(1.0, 0.1), (2, 1.0): ThreadTimes(5.0, 5.0)}})
    after = Snapshot(12.5, MachineTimes(400, 15, 900), {"server": {
        (1, 1.0): ThreadTimes(1.5, 0.3), (3, 11.0): ThreadTimes(0.2, 0.05)}})
    account = difference(before, after)
    assert account.elapsed_s == 2.5
    usage = account.parts["server"]
    assert usage.run_s == pytest.approx(0.7) and usage.wait_s == pytest.approx(0.25)
    assert (account.machine_busy, account.machine_iowait, account.machine_total) == (300, 10, 500)
    report = account.report(units=7)
    assert report["machine_busy"] == 0.6 and report["machine_iowait"] == 0.02
    assert report["parts"] == {"server": {"cpu_s": 0.7, "cpu_us_per_unit": 100000.0,
                                          "running": 0.28, "waiting_for_cpu": 0.1}}


def test_a_slice_books_the_cpu_a_real_process_burnt_in_it() -> None:
    accounts = CpuAccounts()
    with spinner() as process:
        parts = [Part("spinner", process.pid, descendants=False)]
        for _ in range(2):  # two slices of one name add up
            with accounts.slice("spin", parts):
                spin(process, 0.15)
        times = thread_times(process.pid)
    assert times is not None
    account = accounts.accounts["spin"]
    burnt = account.parts["spinner"].run_s
    assert 0.29 <= burnt <= account.elapsed_s + 0.01
    assert burnt <= times.run_s
    assert account.machine_total > 0 and account.machine_busy > 0


def test_a_slice_ended_early_does_not_count_what_follows() -> None:
    accounts = CpuAccounts()
    with spinner() as process:
        with accounts.slice("copy", [Part("spinner", process.pid)]) as pending:
            spin(process, 0.1)
            pending.end()
            spin(process, 0.4)  # after the slice's second snapshot: not booked
    burnt = accounts.accounts["copy"].parts["spinner"].run_s
    assert 0.095 <= burnt < 0.3


def test_a_process_gone_before_the_first_snapshot_books_nothing() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(10)
    accounts = CpuAccounts()
    with accounts.slice("gone", [Part("gone", process.pid)]):
        pass
    assert accounts.accounts["gone"].parts["gone"].run_s == 0
    assert thread_times(process.pid) is None
