"""The parent's side of bench/fault_sink.py: start it as a child process and read its record.

``FaultSinkProcess`` runs ``python -m bench.fault_sink`` on a free loopback port and returns once
it listens; ``SinkRecord`` reads the answer lines it appends (one per DATA: seq, code, time),
as they come, and keeps per sequence number the first 250, the 550s and the 451s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.herald_process import free_port


class SinkRecord:
    """Reads the fault sink's answer lines as they are appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.answers: list[dict[str, Any]] = []
        self.accepted: dict[int, float] = {}  # seq -> time of its (first) 250
        self.duplicates: dict[int, int] = {}  # seq -> 250s after its first one
        self.bounced: set[int] = set()
        self.tempfailed: set[int] = set()
        self.other = 0  # answers to messages that are not the bench's

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                self._add(orjson.loads(line))

    def _add(self, answer: dict[str, Any]) -> None:
        self.answers.append(answer)
        seq = answer["seq"]
        if seq is None:
            self.other += 1
        elif answer["code"] == 250:
            if seq in self.accepted:
                self.duplicates[seq] = self.duplicates.get(seq, 0) + 1
            else:
                self.accepted[seq] = answer["t"]
        elif answer["code"] == 550:
            self.bounced.add(seq)
        else:
            self.tempfailed.add(seq)

    def final(self) -> set[int]:
        return set(self.accepted) | self.bounced


class FaultSinkProcess:
    def __init__(self, record: Path, tempfail: float, permfail: float, seed: int) -> None:
        self.port = free_port()
        self.record = record
        self.command = [sys.executable, "-m", "bench.fault_sink", "--listen",
                        f"127.0.0.1:{self.port}", "--tempfail", str(tempfail), "--permfail",
                        str(permfail), "--seed", str(seed), "--record", str(record)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # printed once the socket listens
        if b"listening" not in line:
            raise RuntimeError(f"the fault sink did not start (exit {self.process.poll()})")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
