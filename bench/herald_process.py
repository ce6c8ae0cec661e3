"""Start ``herald`` as a child process and wait for its systemd-style READY=1 notification.

Used by the benchmarks and by the crash tests: the real binary, the real readiness handshake.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class HeraldProcess:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path | None = None) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._notify_dir = tempfile.mkdtemp(prefix="herald-notify-")
        self.notify_path = os.path.join(self._notify_dir, "notify.sock")
        self.notifications: list[str] = []

    def start(self, timeout: float = 60.0) -> None:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if os.path.exists(self.notify_path):
            os.unlink(self.notify_path)
        notify.bind(self.notify_path)
        notify.settimeout(0.5)
        self._notify = notify
        env = {**os.environ, **self.env, "NOTIFY_SOCKET": self.notify_path}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen([sys.executable, "-m", "herald.cli", *self.args],
                                        env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"herald exited with {self.process.returncode} during start-up"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            if "READY=1" in self.wait_notification(0.5):
                return
        raise TimeoutError("herald did not report READY=1 in time")

    def wait_notification(self, timeout: float) -> str:
        self._notify.settimeout(timeout if timeout > 0 else None)
        if timeout <= 0:
            self._notify.setblocking(False)
        try:
            message = self._notify.recv(4096).decode()
        except (TimeoutError, BlockingIOError):
            return ""
        self.notifications.append(message)
        return message

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise
        finally:
            while self.wait_notification(0.0):  # keep what it said while stopping
                pass
            self._notify.close()


def create_key(env: dict[str, str], *scopes: str) -> str:
    args = [sys.executable, "-m", "herald.cli", "keys", "create", "--name", "bench"]
    for scope in scopes:
        args += ["--scope", scope]
    output = subprocess.run(args, env={**os.environ, **env}, check=True, capture_output=True,
                            text=True, timeout=120).stdout
    return output.strip().splitlines()[-1]


def start_all(processes: list[HeraldProcess], timeout: float = 60.0) -> None:
    """Start several processes at once (each start waits for its READY=1 in its own thread);
    the first failure is raised once all have finished starting."""
    from concurrent.futures import ThreadPoolExecutor

    if not processes:
        return
    with ThreadPoolExecutor(max_workers=len(processes)) as pool:
        futures = [pool.submit(process.start, timeout) for process in processes]
    for future in futures:
        future.result()
