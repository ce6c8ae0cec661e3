"""bench/sizing.py: the sizing arithmetic, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from bench.sizing import (
    GIB,
    Headroom,
    Load,
    Measured,
    RunRate,
    capacity_warnings,
    measured_from_e2e,
    median_measured,
    recommend,
)

MIB = 2**20
MEASURED = Measured(
    cpu_s_per_send={"herald-http": 0.002, "herald-automation": 0.003, "herald-mta": 0.020,
                    "postgres": 0.004},
    memory_bytes={"herald-http": 50 * MIB, "herald-automation": 60 * MIB,
                  "herald-mta": 200 * MIB, "postgres": 190 * MIB},
    db_bytes_per_send=10_000, wal_bytes_per_send=8192, wal_syncs_per_send=2.5)


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
    # 10,000 B x 1,000,000 x 30 days x 2 = 6e11 B = 558.8 GiB -> 559 GiB.
    assert plan.disk_exact_bytes == pytest.approx(6e11)
    assert plan.disk_gib == 559
    # 57.870/s x (2.5 fsyncs + 8192 B / 8192 B) / 0.5 = 405.09 -> 406 IOPS.
    assert plan.iops_exact == pytest.approx(405.0926, rel=1e-6)
    assert plan.iops == 406
    # 57.870/s x 8192 B x 2 / 0.5 = 1,896,296 B/s.
    assert plan.write_bytes_per_s == pytest.approx(1_896_296.3, rel=1e-6)
    assert plan.as_dict()["cores"] == 4 and len(plan.lines) == 5


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


@pytest.mark.parametrize("load", [(0, 5, 30), (-1, 5, 30), (1000, 0.5, 30), (1000, 5, 0)])
def test_impossible_loads_are_refused(load: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        Load(*load)


def test_impossible_headroom_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu_target_utilisation"):
        Headroom(cpu_target_utilisation=0)
    with pytest.raises(ValueError, match="disk_factor"):
        Headroom(disk_factor=0.5)


def e2e_result(sends: int = 1000, mta_cpu: float = 20.0) -> dict[str, object]:
    part = {"cpu_s": 2.0, "peak_memory_mib": 50.0, "memory": "pss", "peak_processes": 1}
    return {"bench": "e2e", "sends": sends, "offered_events_per_s": 50, "duration_s": 20,
            "parts": {"herald-http": part, "herald-mta": {**part, "cpu_s": mta_cpu},
                      "postgres": {**part, "cpu_s": 4.0, "peak_memory_mib": 190.0},
                      "sink": {**part, "cpu_s": 99.0},
                      "load-generator": {**part, "cpu_s": 99.0}},
            "database": {"growth_bytes": 10_000_000, "wal_bytes": 8_192_000,
                         "wal_syncs": 2500}}


def test_figures_per_send_from_an_e2e_result_leave_out_the_sink_and_the_load() -> None:
    measured = measured_from_e2e(e2e_result())
    assert measured.cpu_s_per_send == {"herald-http": 0.002, "herald-mta": 0.020,
                                       "postgres": 0.004}
    assert measured.memory_bytes["postgres"] == 190 * MIB
    assert (measured.db_bytes_per_send, measured.wal_bytes_per_send,
            measured.wal_syncs_per_send) == (10_000, 8192, 2.5)


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
