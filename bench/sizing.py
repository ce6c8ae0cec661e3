"""Hardware from measured figures (pure): cores, memory, disk and IOPS for a daily volume.

Every figure comes from a bench result (``herald bench e2e``: CPU seconds per send of each part,
peak memory of each part, database bytes, WAL bytes and WAL fsyncs per send) and the load to
plan for. The only constants are the headroom factors below, each with its reason; change
them with ``Headroom(...)``.

    peak sends/s      = daily sends / 86,400 x peak factor (checked against the rates the
                        runs kept up with: ``capacity_warnings``)
    cores             = sum over parts (CPU s per send) x peak sends/s / CPU target utilisation
    memory            = sum over parts (peak memory) x memory factor
    disk              = sum over data classes (database bytes per send of the class x daily
                        sends x days the class is kept) x disk factor
    IOPS              = peak sends/s x (WAL fsyncs per send + WAL bytes per send / page)
                        / IOPS target utilisation
    write bandwidth   = peak sends/s x WAL bytes per send x 2 / IOPS target utilisation

Disk follows ``[retention]`` (herald/retention.py): ``herald bench e2e`` splits the database's
growth per send into three classes, each kept for its own time:

    events            the event log's partitions and the ids of their events: dropped after
                      ``[retention] events`` (default 400 days; 0 keeps them forever)
    message_bodies    the bodies of finished messages: dropped after ``[retention]
                      message_bodies`` (default 30 days; 0 keeps them forever)
    kept              everything else (message rows, delivery attempts, the decision log,
                      counters...): no retention drops it, so it grows for as long as Herald
                      runs; the plan counts it over a planning horizon (default 365 days)

A class kept longer than the horizon (or forever) counts the horizon's days: the disk is what
the database holds after ``horizon_days`` of the planned volume. Results without the split
(``herald bench e2e`` before it recorded one) fall back to one figure, every byte kept
``retention_days``, and the plan says so in its ``notes``.

The IOPS line counts each WAL fsync as one device write and the changed data once more as
Postgres pages written by checkpoints (every change is WAL-logged, so the WAL's volume stands
for it); write bandwidth counts those bytes twice (WAL, then the data files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SECONDS_PER_DAY = 86_400
GIB = 1024 ** 3
PAGE_BYTES = 8192  # a Postgres page: the unit in which checkpoints write data files
# Parts of a bench run that a production server runs (the load generator and the sink stand
# for the senders and the receiving MX servers, which live elsewhere).
PRODUCTION_PARTS = ("herald-http", "herald-automation", "herald-mta", "herald-submission",
                    "herald-inbound", "postgres")


@dataclass(frozen=True)
class Headroom:
    # Cores busy at most half the time at peak: bursts above the planned peak, retry backlogs
    # after an outage, vacuum and checkpoints, and the bench machine's own noise.
    cpu_target_utilisation: float = 0.5
    # Memory measured at bench scale: caches, queues and Postgres' working set grow with the
    # volume and the retention; the page cache keeps the hot part of the database.
    memory_factor: float = 2.0
    # Disk: dead rows before vacuum, index growth, WAL kept for checkpoints, a local backup.
    disk_factor: float = 2.0
    # Storage busy at most half the time at peak, for the same reasons as the cores.
    iops_target_utilisation: float = 0.5

    def __post_init__(self) -> None:
        for name in ("cpu_target_utilisation", "iops_target_utilisation"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1]")
        for name in ("memory_factor", "disk_factor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


# The classes of database bytes, by how long Herald keeps them (see the module's docstring).
EVENTS, BODIES, KEPT = "events", "message_bodies", "kept"
DATA_CLASSES = (EVENTS, BODIES, KEPT)
# herald/retention.py RetentionSettings' defaults, in days (tests/test_bench_sizing.py checks
# they agree; this module stays free of herald's imports).
DEFAULT_EVENTS_DAYS = 400.0
DEFAULT_BODIES_DAYS = 30.0
DEFAULT_HORIZON_DAYS = 365.0
DEFAULT_RETENTION_DAYS = 30.0  # the single figure for results without the split


@dataclass(frozen=True)
class Load:
    daily_sends: float
    peak_factor: float
    # Only for measurements without the per-class split: days every database byte is kept.
    retention_days: float = DEFAULT_RETENTION_DAYS
    events_days: float = DEFAULT_EVENTS_DAYS  # [retention] events; 0 keeps them forever
    bodies_days: float = DEFAULT_BODIES_DAYS  # [retention] message_bodies; 0 keeps them
    horizon_days: float = DEFAULT_HORIZON_DAYS  # the plan's age: how long "kept" data grows

    def __post_init__(self) -> None:
        if self.daily_sends <= 0:
            raise ValueError("daily sends must be > 0")
        if self.peak_factor < 1:
            raise ValueError("the peak factor must be >= 1 (peak over the day's average)")
        if self.retention_days <= 0:
            raise ValueError("retention days must be > 0")
        if self.events_days < 0 or self.bodies_days < 0:
            raise ValueError("events and bodies days must be >= 0 (0 keeps them forever)")
        if self.horizon_days <= 0:
            raise ValueError("horizon days must be > 0")

    def days_kept(self, data_class: str) -> float:
        """Days of sends the database holds of ``data_class`` after the planning horizon."""
        retention = {EVENTS: self.events_days, BODIES: self.bodies_days}.get(data_class, 0.0)
        return min(retention, self.horizon_days) if retention else self.horizon_days

    def why_kept(self, data_class: str) -> str:
        horizon = f"the {self.horizon_days:g}-day planning horizon"
        if data_class == KEPT:
            return f"kept forever: {horizon}, and still growing after it"
        setting, days = (("[retention] events", self.events_days) if data_class == EVENTS
                         else ("[retention] message_bodies", self.bodies_days))
        if not days:
            return f"{setting} = 0 keeps them forever: {horizon}"
        if days > self.horizon_days:
            return f"{setting} {days:g}d, capped at {horizon}"
        return f"{setting} {days:g}d"

    @property
    def average_sends_per_s(self) -> float:
        return self.daily_sends / SECONDS_PER_DAY

    @property
    def peak_sends_per_s(self) -> float:
        return self.average_sends_per_s * self.peak_factor


@dataclass(frozen=True)
class Measured:
    cpu_s_per_send: Mapping[str, float]
    memory_bytes: Mapping[str, float]
    db_bytes_per_send: float
    wal_bytes_per_send: float
    wal_syncs_per_send: float
    source: str = ""
    # db_bytes_per_send split into DATA_CLASSES (summing to it); None for results recorded
    # before e2e measured the split: the disk then falls back to one retention figure.
    db_bytes_per_send_by_class: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Recommendation:
    load: Load
    headroom: Headroom
    peak_sends_per_s: float
    busy_cores_at_peak: float
    cores_exact: float
    cores: int
    cores_per_part: dict[str, float]
    memory_exact_bytes: float
    memory_gib: int
    disk_exact_bytes: float
    disk_gib: int
    iops_exact: float
    iops: int
    write_bytes_per_s: float
    lines: list[str] = field(default_factory=list)
    # Per data class, the bytes the database holds after the horizon (before the disk factor);
    # empty when the measurement had no split (then the disk is the single retention figure).
    disk_by_class: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        if self.disk_by_class:
            disk: dict[str, Any] = {
                "disk_basis": "retention classes", "events_days": self.load.events_days,
                "bodies_days": self.load.bodies_days, "horizon_days": self.load.horizon_days,
                "disk_by_class_gib": {name: round(value / GIB, 3)
                                      for name, value in self.disk_by_class.items()}}
        else:
            disk = {"disk_basis": "single retention figure",
                    "retention_days": self.load.retention_days}
        return {"daily_sends": self.load.daily_sends, "peak_factor": self.load.peak_factor,
                **disk,
                "peak_sends_per_s": round(self.peak_sends_per_s, 2),
                "busy_cores_at_peak": round(self.busy_cores_at_peak, 3),
                "cores": self.cores, "cores_exact": round(self.cores_exact, 3),
                "cores_per_part": {k: round(v, 3) for k, v in self.cores_per_part.items()},
                "memory_gib": self.memory_gib,
                "memory_exact_gib": round(self.memory_exact_bytes / GIB, 3),
                "disk_gib": self.disk_gib, "disk_exact_gib": round(self.disk_exact_bytes / GIB, 3),
                "iops": self.iops, "iops_exact": round(self.iops_exact, 1),
                "write_mib_per_s": round(self.write_bytes_per_s / 2**20, 2),
                "headroom": vars(self.headroom), "notes": self.notes}


def recommend(load: Load, measured: Measured, headroom: Headroom | None = None) -> Recommendation:
    headroom = headroom or Headroom()
    peak = load.peak_sends_per_s
    busy = {part: cpu * peak for part, cpu in measured.cpu_s_per_send.items()}
    busy_total = sum(busy.values())
    cores_exact = busy_total / headroom.cpu_target_utilisation
    memory_exact = sum(measured.memory_bytes.values()) * headroom.memory_factor
    disk_by_class, disk_lines, notes = disk_bytes(load, measured)
    disk_exact = (sum(disk_by_class.values()) if disk_by_class
                  else measured.db_bytes_per_send * load.daily_sends * load.retention_days
                  ) * headroom.disk_factor
    disk_gib = ceil_at_least_one(disk_exact / GIB)
    if disk_by_class:
        disk_lines.append(
            "disk: (" + " + ".join(f"{value / GIB:.1f}" for value in disk_by_class.values())
            + f") GiB x {headroom.disk_factor:g} = {disk_exact / GIB:.1f} GiB -> {disk_gib} GiB "
            f"after {load.horizon_days:g} days")
    else:
        disk_lines.append(
            f"disk: {measured.db_bytes_per_send:,.0f} B per send x {load.daily_sends:,.0f}/day x "
            f"{load.retention_days:g} days x {headroom.disk_factor:g} = "
            f"{disk_exact / GIB:.1f} GiB -> {disk_gib} GiB (every byte kept "
            f"{load.retention_days:g} days: no per-class split in these results)")
    iops_exact = (peak * (measured.wal_syncs_per_send + measured.wal_bytes_per_send / PAGE_BYTES)
                  / headroom.iops_target_utilisation)
    write_bytes = peak * measured.wal_bytes_per_send * 2 / headroom.iops_target_utilisation
    lines = [
        f"peak rate: {load.daily_sends:,.0f} sends/day / 86,400 s x peak factor "
        f"{load.peak_factor:g} = {peak:.1f} sends/s",
        "cores: (" + " + ".join(f"{cpu * 1000:.2f} ms" for cpu in
                                 measured.cpu_s_per_send.values())
        + f") CPU per send x {peak:.1f}/s = {busy_total:.2f} busy cores; at "
        f"{headroom.cpu_target_utilisation:.0%} target utilisation {cores_exact:.2f} -> "
        f"{ceil_at_least_one(cores_exact)}",
        f"memory: {sum(measured.memory_bytes.values()) / 2**20:,.0f} MiB peak (sum of parts) x "
        f"{headroom.memory_factor:g} = {memory_exact / GIB:.2f} GiB -> "
        f"{ceil_at_least_one(memory_exact / GIB)} GiB",
        *disk_lines,
        f"IOPS: {peak:.1f}/s x ({measured.wal_syncs_per_send:.3f} WAL fsyncs + "
        f"{measured.wal_bytes_per_send:,.0f} B / {PAGE_BYTES} B pages) per send / "
        f"{headroom.iops_target_utilisation:.0%} = {iops_exact:.0f} -> "
        f"{ceil_at_least_one(iops_exact)} write IOPS",
    ]
    return Recommendation(load, headroom, peak, busy_total, cores_exact,
                          ceil_at_least_one(cores_exact),
                          {part: value / headroom.cpu_target_utilisation
                           for part, value in busy.items()},
                          memory_exact, ceil_at_least_one(memory_exact / GIB), disk_exact,
                          disk_gib, iops_exact, ceil_at_least_one(iops_exact), write_bytes,
                          lines, disk_by_class, notes)


CLASS_NAMES = {EVENTS: "event log (events and their ids)", BODIES: "message bodies",
               KEPT: "kept forever (message rows, attempts, decision log, the rest)"}


def disk_bytes(load: Load, measured: Measured) -> tuple[dict[str, float], list[str], list[str]]:
    """Per data class, the bytes held after the horizon (before headroom), a line of
    arithmetic for each, and notes; no classes (and a note) when the measurement has no
    split."""
    split = measured.db_bytes_per_send_by_class
    if split is None:
        return {}, [], [
            f"these results have no per-class split of the database's growth (recorded by an "
            f"older herald bench e2e): the disk assumes every byte is kept "
            f"{load.retention_days:g} days (--retention-days), whereas message rows and "
            "attempts are kept forever and events for [retention] events; run herald bench "
            "e2e again for a disk figure that follows [retention]"]
    by_class, lines = {}, []
    for name in DATA_CLASSES:
        per_send = split.get(name, 0.0)
        days = load.days_kept(name)
        by_class[name] = per_send * load.daily_sends * days
        lines.append(f"disk, {CLASS_NAMES[name]}: {per_send:,.0f} B per send x "
                     f"{load.daily_sends:,.0f}/day x {days:g} days ({load.why_kept(name)}) = "
                     f"{by_class[name] / GIB:.1f} GiB")
    return by_class, lines, []


# A run "kept up" when it delivered at least this share of what it was offered (less the
# permanent failures) within its load window; below, the system was saturated and its queue grew.
KEPT_UP_SHARE = 0.9


@dataclass(frozen=True)
class RunRate:
    offered_per_s: float
    sustained_per_s: float
    permfail: float = 0.0

    @property
    def kept_up(self) -> bool:
        return self.sustained_per_s >= self.offered_per_s * (1 - self.permfail) * KEPT_UP_SHARE


def capacity_warnings(peak_sends_per_s: float, runs: list[RunRate]) -> list[str]:
    """What the arithmetic cannot promise: CPU per send x rate assumes the CPU is the limit. A
    run that did not keep up shows another limit (latency-bound stages, a shared machine); a
    peak above every rate a run kept up with is extrapolated, not demonstrated."""
    warnings = []
    saturated = [run for run in runs if not run.kept_up]
    for run in saturated:
        warnings.append(
            f"a run offered {run.offered_per_s:g} events/s sustained only "
            f"{run.sustained_per_s:g} sends/s: it was saturated, so something other than the "
            "CPU per send limited it (see its stage latencies and the load average); the "
            "core count below assumes CPU is the limit")
    kept = [run.sustained_per_s for run in runs if run.kept_up]
    best = max(kept, default=0.0)
    if peak_sends_per_s > best:
        shown = (f"the best rate a run kept up with was {best:g} sends/s" if kept
                 else "no run kept up with its offered rate")
        warnings.append(
            f"the planned peak ({peak_sends_per_s:.1f} sends/s) is above what was demonstrated"
            f" ({shown}): confirm on the target machine with herald bench e2e --rate "
            f"{math.ceil(peak_sends_per_s)}")
    return warnings


def ceil_at_least_one(value: float) -> int:
    return max(1, math.ceil(value - 1e-9))  # 4.0000000001 from float sums is still 4


def measured_from_e2e(result: Mapping[str, Any],
                      parts: tuple[str, ...] = PRODUCTION_PARTS) -> Measured:
    """The per-send figures of one ``herald bench e2e`` JSON result."""
    if result.get("bench") != "e2e":
        raise ValueError("not a herald bench e2e result")
    sends = result.get("sends") or 0
    if sends <= 0:
        raise ValueError("the e2e result delivered no message: nothing to size from")
    measured_parts = {name: part for name, part in result["parts"].items() if name in parts}
    if "postgres" not in measured_parts:
        raise ValueError("the e2e result has no Postgres figures (run it on the embedded "
                         "database, without --database-url)")
    database = result["database"]
    by_class = database.get("growth_by_class")
    return Measured(
        cpu_s_per_send={name: part["cpu_s"] / sends for name, part in measured_parts.items()},
        memory_bytes={name: part["peak_memory_mib"] * 2**20
                      for name, part in measured_parts.items()},
        db_bytes_per_send=max(0.0, database["growth_bytes"] / sends),
        wal_bytes_per_send=database["wal_bytes"] / sends,
        wal_syncs_per_send=database["wal_syncs"] / sends,
        source=f"e2e at {result['offered_events_per_s']} events/s for {result['duration_s']}s",
        db_bytes_per_send_by_class=None if by_class is None else {
            name: max(0.0, by_class.get(name, 0) / sends) for name in DATA_CLASSES})


def median_measured(measurements: list[Measured]) -> Measured:
    """Part by part, the median of several runs' figures (the machine is noisy)."""
    if not measurements:
        raise ValueError("no measurement")

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1]
                                                         + ordered[middle]) / 2

    names = [name for name in measurements[0].cpu_s_per_send
             if all(name in m.cpu_s_per_send for m in measurements)]
    # The split of the median run by database bytes (the mean of the middle two for an even
    # count), so that the classes still add up to the median bytes per send.
    by_db = sorted(measurements, key=lambda m: m.db_bytes_per_send)
    middle = by_db[(len(by_db) - 1) // 2: len(by_db) // 2 + 1]
    splits = [m.db_bytes_per_send_by_class for m in middle]
    by_class = (None if any(m.db_bytes_per_send_by_class is None for m in measurements) else
                {name: sum(split[name] for split in splits if split is not None) / len(splits)
                 for name in DATA_CLASSES})
    return Measured(
        cpu_s_per_send={n: median([m.cpu_s_per_send[n] for m in measurements]) for n in names},
        memory_bytes={n: median([m.memory_bytes[n] for m in measurements]) for n in names},
        db_bytes_per_send=median([m.db_bytes_per_send for m in measurements]),
        wal_bytes_per_send=median([m.wal_bytes_per_send for m in measurements]),
        wal_syncs_per_send=median([m.wal_syncs_per_send for m in measurements]),
        source=f"median of {len(measurements)} e2e runs", db_bytes_per_send_by_class=by_class)
