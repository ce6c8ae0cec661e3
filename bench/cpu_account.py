"""Where a benchmark's CPU goes, slice by slice: each part's CPU time and run-queue wait, and
how busy the machine was.

A part is a set of processes: a root process, with or without its descendants (Postgres'
backends). For each thread of each process, Linux's ``/proc/<pid>/task/<tid>/schedstat`` gives
the time it ran on a CPU and the time it waited, runnable, for one (the run queue); a part's
figures are the sums over its threads. ``/proc/stat`` gives the machine's busy and idle time
over all its CPUs.

:meth:`CpuAccounts.slice` takes a snapshot before and after one slice of load and adds the
differences to that slice's account (slices of the same name add up). A process that appears
during a slice counts whole; one that exits during it is lost to that slice, so a load whose
connections close when it ends takes the second snapshot itself, before closing
(:meth:`CpuAccounts.begin` and :meth:`Pending.end`).

The run-queue wait tells a server that had nothing to do (asleep: neither running nor waiting)
from one that was ready but had no CPU: on a small machine shared with its load generator and
its database, the second costs throughput as surely as slower code does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.resources import Part, part_processes

PROC = Path("/proc")

# (pid, the process's start time): a pid reused by a new process is another process.
ProcessKey = tuple[int, float]


@dataclass(frozen=True)
class ThreadTimes:
    """Seconds a process's threads ran on a CPU, and waited runnable for one."""

    run_s: float
    wait_s: float


@dataclass(frozen=True)
class MachineTimes:
    """Clock ticks of all CPUs: busy (neither idle nor waiting for I/O), idle while a task
    waited for I/O (``iowait``: e.g. a commit's flush) and in all."""

    busy: int
    iowait: int
    total: int


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.perf_counter()
    machine: MachineTimes | None
    parts: dict[str, dict[ProcessKey, ThreadTimes]]


@dataclass
class Usage:
    run_s: float = 0.0
    wait_s: float = 0.0


@dataclass
class Account:
    """One slice's (or several slices') elapsed seconds, each part's usage, the machine's."""

    elapsed_s: float = 0.0
    parts: dict[str, Usage] = field(default_factory=dict)
    machine_busy: int = 0
    machine_iowait: int = 0
    machine_total: int = 0

    def add(self, other: Account) -> None:
        self.elapsed_s += other.elapsed_s
        for name, usage in other.parts.items():
            mine = self.parts.setdefault(name, Usage())
            mine.run_s += usage.run_s
            mine.wait_s += usage.wait_s
        self.machine_busy += other.machine_busy
        self.machine_iowait += other.machine_iowait
        self.machine_total += other.machine_total

    def report(self, units: int) -> dict[str, object]:
        """Per part: CPU seconds, µs per unit (request, event, row), and the shares of the
        elapsed time it ran and waited for a CPU (summed over its processes: 2.0 is two CPUs'
        worth); the machine's busy share of all its CPUs, and the share idle while waiting for
        I/O."""
        elapsed = self.elapsed_s or float("nan")
        parts = {name: {"cpu_s": round(usage.run_s, 3),
                        "cpu_us_per_unit": round(1e6 * usage.run_s / units, 2) if units else None,
                        "running": round(usage.run_s / elapsed, 3),
                        "waiting_for_cpu": round(usage.wait_s / elapsed, 3)}
                 for name, usage in sorted(self.parts.items())}
        total = self.machine_total
        return {"elapsed_s": round(self.elapsed_s, 3), "units": units,
                "machine_busy": round(self.machine_busy / total, 3) if total else None,
                "machine_iowait": round(self.machine_iowait / total, 3) if total else None,
                "parts": parts}


# --- reading /proc (pure parsing apart) ------------------------------------------------------

def parse_schedstat(text: str) -> tuple[int, int]:
    """``/proc/.../schedstat``: nanoseconds on a CPU and waiting on a run queue."""
    fields = text.split()
    if len(fields) < 2:
        raise ValueError(f"schedstat: expected at least two fields, got {text!r}")
    return int(fields[0]), int(fields[1])


def parse_machine_times(text: str) -> MachineTimes:
    """The aggregate ``cpu`` line of ``/proc/stat``. Idle and iowait are not busy; guest time
    is already inside user time, so it is not added again."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(value) for value in fields[1:9]]  # user .. steal
            total = sum(ticks)
            return MachineTimes(busy=total - ticks[3] - ticks[4], iowait=ticks[4], total=total)
    raise ValueError("/proc/stat has no aggregate cpu line")


def thread_times(pid: int, proc: Path = PROC) -> ThreadTimes | None:
    """The sums over a process's threads, or None once it is gone."""
    run = wait = 0
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            task_run, task_wait = parse_schedstat((task / "schedstat").read_text())
        except OSError:
            continue  # a thread that just ended
        run += task_run
        wait += task_wait
    return ThreadTimes(run / 1e9, wait / 1e9)


def machine_times(proc: Path = PROC) -> MachineTimes | None:
    try:
        return parse_machine_times((proc / "stat").read_text())
    except OSError:
        return None


def snapshot(parts: list[Part]) -> Snapshot:
    taken: dict[str, dict[ProcessKey, ThreadTimes]] = {}
    for part in parts:
        processes = taken.setdefault(part.name, {})
        for process in part_processes(part):
            try:
                key = (process.pid, process.create_time())
            except psutil.Error:
                continue
            times = thread_times(process.pid)
            if times is not None:
                processes[key] = times
    return Snapshot(time.perf_counter(), machine_times(), taken)


def difference(before: Snapshot, after: Snapshot) -> Account:
    """What happened between two snapshots: a process only in ``after`` counts whole, one only
    in ``before`` (it exited) not at all."""
    account = Account(elapsed_s=after.at - before.at)
    for name, processes in after.parts.items():
        usage = account.parts.setdefault(name, Usage())
        earlier = before.parts.get(name, {})
        for key, times in processes.items():
            start = earlier.get(key, ThreadTimes(0.0, 0.0))
            usage.run_s += times.run_s - start.run_s
            usage.wait_s += times.wait_s - start.wait_s
    if before.machine is not None and after.machine is not None:
        account.machine_busy = after.machine.busy - before.machine.busy
        account.machine_iowait = after.machine.iowait - before.machine.iowait
        account.machine_total = after.machine.total - before.machine.total
    return account


# --- slices ----------------------------------------------------------------------------------

@dataclass
class Pending:
    """A slice begun: :meth:`end` takes its second snapshot and books it."""

    accounts: CpuAccounts
    name: str
    parts: list[Part]
    before: Snapshot
    ended: bool = False

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.accounts.book(self.name, difference(self.before, snapshot(self.parts)))


class CpuAccounts:
    """Accounts by slice name, each the sum of that name's slices."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}

    def begin(self, name: str, parts: list[Part]) -> Pending:
        return Pending(self, name, parts, snapshot(parts))

    @contextmanager
    def slice(self, name: str, parts: list[Part]) -> Iterator[Pending]:
        """Around one slice of load; the slice may end itself earlier (``Pending.end``)."""
        pending = self.begin(name, parts)
        yield pending
        pending.end()

    def book(self, name: str, account: Account) -> None:
        self.accounts.setdefault(name, Account()).add(account)


def own_process() -> Part:
    """The benchmark's own process (its load client), threads included."""
    return Part("client", os.getpid(), descendants=False)
