"""``herald bench intake``'s CPU accounts: which processes each slice counts, and what the run
reports of them (``cpu`` and ``cpu_single_to_bare_http`` in its JSON line, lines on stderr).

The parts are the server processes (Herald's or the bare stack's), the load client (the
bench's own process) and, on the embedded Postgres, the postmaster with its backends; a
given database may serve others, so it is not counted. How the accounts are taken is
:mod:`bench.cpu_account`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.cpu_account import CpuAccounts, own_process
from bench.resources import Part

UNITS = {"bare_http": "request", "single": "request", "batch": "event", "copy": "row",
         "copy_log": "row"}


class Processes:
    """Herald's server processes, the embedded Postgres (None on a given database: it may serve
    others) and this process (the load client), and the CPU accounts of the run's slices."""

    def __init__(self, servers: list[int], postgres: int | None) -> None:
        self.servers = [Part("server", pid, descendants=False) for pid in servers]
        self.postgres = [Part("postgres", postgres)] if postgres is not None else []
        self.accounts = CpuAccounts()

    def herald(self) -> list[Part]:
        return [*self.servers, own_process(), *self.postgres]

    def bare(self, pid: int) -> list[Part]:
        return [Part("server", pid, descendants=False), own_process(), *self.postgres]

    def copy(self) -> list[Part]:
        return [own_process(), *self.postgres]


def postmaster_pid(data_dir: Path) -> int | None:
    """The embedded Postgres's postmaster (its backends are its children), from the first line
    of its ``postmaster.pid``; None if it cannot be read."""
    try:
        return int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_report(accounts: CpuAccounts, ceilings: dict[str, dict[str, Any]],
               phases: list[dict[str, Any]], batch_size: int) -> dict[str, dict[str, Any]]:
    """Each measured phase's and ceiling's CPU account, per request (single events, the bare
    stack), per event (batches) or per row (raw COPY, bare or into the log's shape)."""
    units: dict[str, int] = {}
    if "bare_http" in ceilings:
        units["bare_http"] = ceilings["bare_http"]["requests"]
    for name in ("copy", "copy_log"):
        if name in ceilings:
            units[name] = ceilings[name]["rows"]
    for phase in phases:
        if phase["phase"] == "single":
            units["single"] = phase["requests"]
        else:
            units["batch"] = phase["requests"] * batch_size
    return {name: account.report(units.get(name, 0))
            for name, account in accounts.accounts.items()}


def server_comparison(cpu: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Herald's server against the bare stack's under the single-event load: CPU per request
    (Herald's over the bare stack's) and the share of the time each ran. The rate ratio is
    about the running shares' ratio divided by the CPU ratio."""
    try:
        herald = cpu["single"]["parts"]["server"]
        bare = cpu["bare_http"]["parts"]["server"]
    except KeyError:
        return None
    if not herald["cpu_us_per_unit"] or not bare["cpu_us_per_unit"]:
        return None
    return {"server_cpu_per_request": round(herald["cpu_us_per_unit"] / bare["cpu_us_per_unit"],
                                            3),
            "server_running": {"single": herald["running"], "bare_http": bare["running"]},
            "server_waiting_for_cpu": {"single": herald["waiting_for_cpu"],
                                       "bare_http": bare["waiting_for_cpu"]}}


def print_cpu(cpu: dict[str, dict[str, Any]]) -> None:
    """One line per phase and ceiling: each part's CPU per unit and shares, the machine's."""
    for name, account in cpu.items():
        parts = ", ".join(
            f"{part} {usage['cpu_us_per_unit']} µs (running {usage['running']}, waiting for "
            f"a CPU {usage['waiting_for_cpu']})" for part, usage in account["parts"].items())
        print(f"{'cpu ' + name:>14}: per {UNITS.get(name, 'unit')}: {parts}; machine busy "
              f"{account['machine_busy']}, idle waiting for I/O {account['machine_iowait']}",
              file=sys.stderr)
