"""bench/sizing.py: the sizing arithmetic, checked against values worked out by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.sizing import (
    BODIES,
    DEFAULT_BODIES_DAYS,
    DEFAULT_EVENTS_DAYS,
    EVENTS,
    GIB,
    KEPT,
    Headroom,
    Load,
    Measured,
    RunRate,
    capacity_warnings,
    measured_from_e2e,
    median_measured,
    recommend,
)
from herald.retention import DAY, RetentionSettings

MIB = 2**20
MEASURED = Measured(
    cpu_s_per_send={"herald-http": 0.002, "herald-automation": 0.003, "herald-mta": 0.020,
                    "postgres": 0.004},
    memory_bytes={"herald-http": 50 * MIB, "herald-automation": 60 * MIB,
                  "herald-mta": 200 * MIB, "postgres": 190 * MIB},
    db_bytes_per_send=10_000, wal_bytes_per_send=8192, wal_syncs_per_send=2.5)
# The same 10,000 B per send, split by how long [retention] keeps it.
SPLIT = replace(MEASURED, db_bytes_per_send_by_class={EVENTS: 2000, BODIES: 5000, KEPT: 3000})


def test_one_million_a_day_with_a_peak_of_five() -> None:
    plan = recommend(Load(1_000_000, 5, 30), MEASURED)
    # 1,000,000 / 86,400 = 11.574 sends/s on average; x 5 = 57.870 at peak.
    assert plan.peak_sends_per_s == pytest.approx(57.87037, rel=1e-6)
    # 0.029 CPU s per send x 57.870/s = 1.6782 busy cores; / 0.5 target = 3.3565 -> 4 cores.
    assert plan.busy_cores_at_peak == pytest.approx(1.678241, rel=1e-6)
    assert plan.cores_exact == pytest.approx(3.356481, rel=1e-6)
    assert plan.cores == 4
    assert plan.cores_per_part["herald-mta"] == pytest.approx(0.020 * 57.87037 / 0.5)
    # 500 MiB x 2 = 1000 MiB = 0.977 GiB -> 1 GiB.
    assert plan.memory_exact_bytes == 1000 * MIB
    assert plan.memory_gib == 1
    # No per-class split: the single figure, 10,000 B x 1,000,000 x 30 days x 2 = 6e11 B =
    # 558.8 GiB -> 559 GiB, and a note saying the disk does not follow [retention].
    assert plan.disk_exact_bytes == pytest.approx(6e11)
    assert plan.disk_gib == 559 and plan.disk_by_class == {}
    (note,) = plan.notes
    assert "no per-class split" in note and "every byte is kept 30 days" in note
    assert plan.as_dict()["disk_basis"] == "single retention figure"
    assert plan.as_dict()["retention_days"] == 30
    assert "x 30 days x 2 = 558.8 GiB -> 559 GiB" in plan.lines[3]
    # 57.870/s x (2.5 fsyncs + 8192 B / 8192 B) / 0.5 = 405.09 -> 406 IOPS.
    assert plan.iops_exact == pytest.approx(405.0926, rel=1e-6)
    assert plan.iops == 406
    # 57.870/s x 8192 B x 2 / 0.5 = 1,896,296 B/s.
    assert plan.write_bytes_per_s == pytest.approx(1_896_296.3, rel=1e-6)
    assert plan.as_dict()["cores"] == 4 and len(plan.lines) == 5


def test_disk_follows_the_retention_of_each_class() -> None:
    plan = recommend(Load(1_000_000, 5), SPLIT)  # events 400d, bodies 30d, horizon 365d
    # events: 2,000 B x 1,000,000 x 365 days (400 capped at the horizon) = 7.3e11 B;
    # bodies: 5,000 B x 1,000,000 x 30 days = 1.5e11 B;
    # kept forever: 3,000 B x 1,000,000 x 365 days (the horizon) = 1.095e12 B;
    # (7.3e11 + 1.5e11 + 1.095e12) x 2 = 3.95e12 B = 3678.7 GiB -> 3679 GiB.
    assert plan.disk_by_class == pytest.approx({EVENTS: 7.3e11, BODIES: 1.5e11, KEPT: 1.095e12})
    assert plan.disk_exact_bytes == pytest.approx(3.95e12)
    assert plan.disk_gib == 3679 and plan.notes == []
    events, bodies, kept, total = plan.lines[3:7]
    assert events.startswith("disk, event log (events and their ids): 2,000 B per send x "
                             "1,000,000/day x 365 days ([retention] events 400d, capped at the "
                             "365-day planning horizon) = 679.9 GiB")
    assert "5,000 B per send x 1,000,000/day x 30 days ([retention] message_bodies 30d) = " \
           "139.7 GiB" in bodies
    assert "kept forever" in kept and "3,000 B per send x 1,000,000/day x 365 days" in kept
    assert "= 1019.8 GiB" in kept
    assert total == "disk: (679.9 + 139.7 + 1019.8) GiB x 2 = 3678.7 GiB -> 3679 GiB after 365 days"
    assert len(plan.lines) == 8
    summary = plan.as_dict()
    assert summary["disk_basis"] == "retention classes" and "retention_days" not in summary
    assert (summary["events_days"], summary["bodies_days"], summary["horizon_days"]) == (
        400, 30, 365)
    assert summary["disk_by_class_gib"][BODIES] == pytest.approx(139.698, abs=1e-3)


def test_a_longer_horizon_reaches_the_events_plateau_and_keeps_growing_the_rest() -> None:
    plan = recommend(Load(1_000_000, 5, horizon_days=730), SPLIT)
    # events 2,000 x 1e6 x 400 = 8e11; bodies 1.5e11; kept 3,000 x 1e6 x 730 = 2.19e12;
    # x 2 = 6.28e12 B = 5848.7 GiB -> 5849 GiB.
    assert plan.disk_by_class == pytest.approx({EVENTS: 8e11, BODIES: 1.5e11, KEPT: 2.19e12})
    assert plan.disk_gib == 5849
    assert "x 400 days ([retention] events 400d)" in plan.lines[3]


def test_every_class_kept_as_long_gives_the_single_figure() -> None:
    # 0 keeps forever, as in [retention]: every class then counts the 100-day horizon, and the
    # split adds up to the single figure with 100 retention days: 10,000 x 1e6 x 100 x 2 = 2e12.
    split = recommend(Load(1_000_000, 5, events_days=0, bodies_days=0, horizon_days=100), SPLIT)
    single = recommend(Load(1_000_000, 5, retention_days=100), MEASURED)
    assert split.disk_exact_bytes == pytest.approx(single.disk_exact_bytes) == pytest.approx(2e12)
    assert split.disk_gib == single.disk_gib == 1863  # 1862.6 GiB
    assert "[retention] events = 0 keeps them forever: the 100-day planning horizon" in \
        split.lines[3]


def test_the_default_days_are_retentions_defaults() -> None:
    settings = RetentionSettings()
    assert DEFAULT_EVENTS_DAYS == settings.events / DAY == 400
    assert DEFAULT_BODIES_DAYS == settings.message_bodies / DAY == 30
    load = Load(1000, 1)
    assert (load.events_days, load.bodies_days, load.horizon_days) == (400, 30, 365)


def test_headroom_factors_change_the_answer_as_documented() -> None:
    plan = recommend(Load(1_000_000, 5, 30), MEASURED,
                     Headroom(cpu_target_utilisation=1.0, memory_factor=4.0, disk_factor=1.0,
                              iops_target_utilisation=1.0))
    assert plan.cores_exact == pytest.approx(1.678241, rel=1e-6) and plan.cores == 2
    assert plan.memory_exact_bytes == 2000 * MIB and plan.memory_gib == 2
    assert plan.disk_exact_bytes == pytest.approx(3e11) and plan.disk_gib == 280  # 279.4
    assert plan.iops == 203  # 57.870 x 3.5 = 202.55


def test_small_volumes_still_get_one_of_each() -> None:
    plan = recommend(Load(1000, 1, 1), MEASURED)
    assert (plan.cores, plan.memory_gib, plan.disk_gib, plan.iops) == (1, 1, 1, 1)


@pytest.mark.parametrize("load", [(0, 5, 30), (-1, 5, 30), (1000, 0.5, 30), (1000, 5, 0),
                                  (1000, 5, 30, -1), (1000, 5, 30, 400, -1),
                                  (1000, 5, 30, 400, 30, 0)])
def test_impossible_loads_are_refused(load: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Load(*load)


def test_impossible_headroom_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_target_utilisation"):
        Headroom(cpu_target_utilisation=0)
    with pytest.raises(ValueError, match="disk_factor"):
        Headroom(disk_factor=0.5)


def e2e_result(sends: int = 1000, mta_cpu: float = 20.0,
               by_class: dict[str, int] | None = None) -> dict[str, object]:
    part = {"cpu_s": 2.0, "peak_memory_mib": 50.0, "memory": "pss", "peak_processes": 1}
    database: dict[str, object] = {"growth_bytes": sum(by_class.values()) if by_class
                                   else 10_000_000, "wal_bytes": 8_192_000, "wal_syncs": 2500}
    if by_class is not None:
        database["growth_by_class"] = by_class
    return {"bench": "e2e", "sends": sends, "offered_events_per_s": 50, "duration_s": 20,
            "parts": {"herald-http": part, "herald-mta": {**part, "cpu_s": mta_cpu},
                      "postgres": {**part, "cpu_s": 4.0, "peak_memory_mib": 190.0},
                      "sink": {**part, "cpu_s": 99.0},
                      "load-generator": {**part, "cpu_s": 99.0}},
            "database": database}


def test_figures_per_send_from_an_e2e_result_leave_out_the_sink_and_the_load() -> None:
    measured = measured_from_e2e(e2e_result())
    assert measured.cpu_s_per_send == {"herald-http": 0.002, "herald-mta": 0.020,
                                       "postgres": 0.004}
    assert measured.memory_bytes["postgres"] == 190 * MIB
    assert (measured.db_bytes_per_send, measured.wal_bytes_per_send,
            measured.wal_syncs_per_send) == (10_000, 8192, 2.5)
    assert measured.db_bytes_per_send_by_class is None  # an older result: no split


def test_the_split_per_send_from_an_e2e_result() -> None:
    measured = measured_from_e2e(e2e_result(
        by_class={EVENTS: 2_000_000, BODIES: 5_000_000, KEPT: 3_000_000}))
    assert measured.db_bytes_per_send == 10_000
    assert measured.db_bytes_per_send_by_class == {EVENTS: 2000, BODIES: 5000, KEPT: 3000}
    # A class that shrank over a short run (vacuum, noise) counts as no growth.
    shrunk = measured_from_e2e(e2e_result(
        by_class={EVENTS: 2_000_000, BODIES: 5_000_000, KEPT: -1_000_000}))
    assert shrunk.db_bytes_per_send_by_class == {EVENTS: 2000, BODIES: 5000, KEPT: 0}


def test_results_that_cannot_size_anything_are_refused() -> None:
    with pytest.raises(ValueError, match="no message"):
        measured_from_e2e(e2e_result(sends=0))
    with pytest.raises(ValueError, match="not a herald bench e2e"):
        measured_from_e2e({"bench": "mta"})
    no_postgres = e2e_result()
    no_postgres["parts"] = {"herald-http": {"cpu_s": 1.0, "peak_memory_mib": 1.0}}
    with pytest.raises(ValueError, match="Postgres"):
        measured_from_e2e(no_postgres)


def test_the_median_of_three_runs_is_taken_part_by_part() -> None:
    runs = [measured_from_e2e(e2e_result(mta_cpu=cpu)) for cpu in (30.0, 10.0, 20.0)]
    median = median_measured(runs)
    assert median.cpu_s_per_send["herald-mta"] == 0.020
    assert median.memory_bytes["postgres"] == 190 * MIB
    assert median_measured([runs[0], runs[2]]).cpu_s_per_send["herald-mta"] == pytest.approx(0.025)
    assert GIB == 1024**3


def test_the_median_split_is_the_median_runs_so_the_classes_add_up() -> None:
    runs = [measured_from_e2e(e2e_result(by_class={EVENTS: e, BODIES: b, KEPT: k}))
            for e, b, k in ((1_000_000, 9_000_000, 2_000_000),  # 12,000 B per send
                            (3_000_000, 1_000_000, 1_000_000),  # 5,000
                            (2_000_000, 5_000_000, 3_000_000))]  # 10,000: the median
    median = median_measured(runs)
    assert median.db_bytes_per_send == 10_000
    assert median.db_bytes_per_send_by_class == {EVENTS: 2000, BODIES: 5000, KEPT: 3000}
    # Two runs: the mean of both splits (5,000 and 10,000 B -> 7,500 B per send).
    two = median_measured(runs[1:])
    assert two.db_bytes_per_send_by_class == {EVENTS: 2500, BODIES: 3000, KEPT: 2000}
    assert two.db_bytes_per_send == 7500  # = 2,500 + 3,000 + 2,000
    # One run without the split: no split (the single figure, with its note).
    assert median_measured([*runs, measured_from_e2e(e2e_result())]
                           ).db_bytes_per_send_by_class is None


def test_a_run_kept_up_when_it_delivered_nine_tenths_of_what_could_be_delivered() -> None:
    # 20/s offered, 2% bounced: 20 x 0.98 x 0.9 = 17.64 sends/s is the bar.
    assert RunRate(20, 17.7, 0.02).kept_up and not RunRate(20, 17.6, 0.02).kept_up
    assert not RunRate(50, 16.7, 0.02).kept_up


def test_capacity_warnings_say_what_was_not_demonstrated() -> None:
    assert capacity_warnings(10.0, [RunRate(20, 18.8, 0.02)]) == []
    (beyond,) = capacity_warnings(57.87, [RunRate(20, 18.8, 0.02)])
    assert "best rate a run kept up with was 18.8" in beyond and "--rate 58" in beyond
    saturated, beyond = capacity_warnings(57.87, [RunRate(50, 16.7, 0.02)])
    assert "offered 50 events/s sustained only 16.7" in saturated
    assert "no run kept up" in beyond
