"""CPU and memory of each part of a benchmark (Herald's roles, Postgres, the sink, the load
generator), sampled with psutil in a background thread.

A part is a root process, with or without its descendants (Postgres' backends, the MTA's DKIM
workers). CPU is user + system seconds spent between ``start()`` and ``stop()``: a process
already running at ``start()`` counts from what it had then, one appearing later counts whole;
a process that exits between two samples loses its last interval (samples every
``interval`` seconds keep that small). Memory is the peak over the samples of the part's summed
PSS (proportional set size: shared pages such as Postgres' shared buffers are split between
the processes that map them, so the sum over a part does not count them many times), or RSS
where the kernel gives no PSS.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

MIB = 1024 * 1024


@dataclass(frozen=True)
class Part:
    name: str
    pid: int
    descendants: bool = True


@dataclass
class PartUsage:
    name: str
    cpu_s: float = 0.0
    peak_memory_bytes: int = 0
    peak_processes: int = 0
    memory_kind: str = "pss"

    def as_dict(self) -> dict[str, object]:
        return {"cpu_s": round(self.cpu_s, 3),
                "peak_memory_mib": round(self.peak_memory_bytes / MIB, 1),
                "memory": self.memory_kind, "peak_processes": self.peak_processes}


@dataclass
class _Tracked:
    first_cpu: float
    last_cpu: float


@dataclass
class _PartState:
    part: Part
    usage: PartUsage
    tracked: dict[tuple[int, float], _Tracked] = field(default_factory=dict)


class ResourceSampler:
    def __init__(self, parts: list[Part], interval: float = 0.5) -> None:
        self.interval = interval
        self._states = [_PartState(part, PartUsage(part.name)) for part in parts]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._run, name="bench-resources", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, PartUsage]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._sample(initial=False)
        return {state.part.name: state.usage for state in self._states}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(initial=False)

    def _sample(self, initial: bool) -> None:
        for state in self._states:
            memory = 0
            count = 0
            for process in part_processes(state.part):
                try:
                    with process.oneshot():
                        times = process.cpu_times()
                        cpu = times.user + times.system
                        memory += _memory(process, state.usage)
                        key = (process.pid, process.create_time())
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                count += 1
                tracked = state.tracked.get(key)
                if tracked is None:
                    state.tracked[key] = _Tracked(cpu if initial else 0.0, cpu)
                else:
                    tracked.last_cpu = cpu
            state.usage.cpu_s = sum(t.last_cpu - t.first_cpu for t in state.tracked.values())
            state.usage.peak_memory_bytes = max(state.usage.peak_memory_bytes, memory)
            state.usage.peak_processes = max(state.usage.peak_processes, count)


def part_processes(part: Part) -> list[psutil.Process]:
    """The part's root process and, if it has them, its descendants (none once it is gone)."""
    try:
        root = psutil.Process(part.pid)
        return [root, *(root.children(recursive=True) if part.descendants else [])]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _memory(process: psutil.Process, usage: PartUsage) -> int:
    try:
        return int(process.memory_full_info().pss)
    except (AttributeError, psutil.AccessDenied):
        usage.memory_kind = "rss"
        return int(process.memory_info().rss)
