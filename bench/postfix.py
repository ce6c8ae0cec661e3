"""A throw-away Postfix instance as a baseline for ``herald bench mta``.

``running_instance`` writes its own ``main.cf`` and ``master.cf`` into a temporary directory
(queue, data directory and ``maillog_file`` there too, an smtpd listener on a free loopback port,
everything relayed to ``[127.0.0.1]:PORT``, no local delivery, no TLS, nothing to syslog), starts
it with ``postfix -c DIR start``, and on the way out stops it, ends any of its processes still
running and removes the directory. The system's default instance (``/etc/postfix``) is only read:
its ``master.cf`` serves as a template.

``relay_throughput`` times Postfix end to end: from the start of ``smtp-source`` until the queue
is empty again, so every message went through a durable queue file and out to the relay.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.herald_process import free_port

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
SMTP_SOURCE = "/usr/sbin/smtp-source"
MASTER_TEMPLATE = Path("/etc/postfix/master.cf")
MAIL_OWNER = "postfix"
SENDER = "sender@bench.test"
RECIPIENT = "user@example.test"
POLL_SECONDS = 0.05
# Under /var so that the default maillog_file_prefixes (/var, /dev/stdout) accept the log file.
TEMP_PARENT = "/var/tmp"

_SENT = re.compile(rb"to=<" + re.escape(RECIPIENT.encode()) + rb">.*status=sent")


class PostfixError(Exception):
    """The Postfix baseline could not be set up or measured."""


def installed() -> bool:
    return all(os.path.exists(p) for p in (POSTFIX, POSTQUEUE, SMTP_SOURCE, MASTER_TEMPLATE))


@dataclass(frozen=True)
class PostfixInstance:
    root: Path
    port: int
    name: str

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"


@dataclass(frozen=True)
class RelayResult:
    messages: int
    message_bytes: int
    sessions: int
    seconds: float
    delivered: int

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds


def instance_main_cf(instance: PostfixInstance, relay_port: int,
                     extra: Mapping[str, str] | None = None) -> str:
    """``main.cf`` for a relay-only instance that lives entirely under ``instance.root``;
    ``extra`` adds or overrides settings (e.g. ``smtpd_milters``)."""
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(instance.queue_dir),
        "data_directory": str(instance.data_dir),
        "mail_owner": MAIL_OWNER,
        "syslog_name": instance.name,
        "maillog_file": str(instance.maillog),
        "maillog_file_prefixes": f"/var, /dev/stdout, {instance.root}",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "myhostname": "postfix.bench.test",
        "mydestination": "",
        "relay_domains": "",
        "local_recipient_maps": "",
        "local_transport": "error:local delivery is disabled",
        "alias_maps": "",
        "alias_database": "",
        "mynetworks": "127.0.0.0/8",
        "relayhost": f"[127.0.0.1]:{relay_port}",
        "smtp_tls_security_level": "none",
        "smtpd_tls_security_level": "none",
        "biff": "no",
        **(extra or {}),
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def instance_master_cf(template: str, listen: str) -> str:
    """The template's services, unchrooted, with one smtpd listener on ``listen``.

    A fresh queue directory has no chroot environment (``etc/``, ``lib/``), so no service is
    chrooted; the template's own ``inet`` listeners and its ``pipe`` deliveries (to users that
    need not exist here) are dropped; a ``postlog`` service is added when missing, since
    ``maillog_file`` needs one.
    """
    lines = [f"{listen} inet n - n - - smtpd"]
    skipping = False
    for line in template.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():  # continuation of the previous service (-o ..., argv=...)
            if not skipping:
                lines.append(line)
            continue
        fields = line.split()
        skipping = len(fields) < 8 or fields[1] == "inet" or fields[7] == "pipe"
        if skipping:
            continue
        fields[4] = "n"
        lines.append(" ".join(fields))
    if not any(line.split()[:2] == ["postlog", "unix-dgram"] for line in lines):
        lines.append("postlog unix-dgram n - n - 1 postlogd")
    return "\n".join(lines) + "\n"


@contextmanager
def running_instance(relay_port: int,
                     extra: Mapping[str, str] | None = None) -> Iterator[PostfixInstance]:
    """Start a throw-away instance relaying to ``relay_port``; stop and remove it afterwards."""
    if not installed():
        raise PostfixError(f"Postfix is not installed ({POSTFIX}, {SMTP_SOURCE})")
    if os.geteuid() != 0:
        raise PostfixError("a Postfix instance needs root to start (its master binds and "
                           "drops privileges to the mail_owner itself)")
    try:
        owner = pwd.getpwnam(MAIL_OWNER)
    except KeyError as error:
        raise PostfixError(f"the Postfix mail_owner user {MAIL_OWNER!r} does not exist") from error
    root = Path(tempfile.mkdtemp(prefix="herald-bench-postfix-", dir=TEMP_PARENT))
    instance = PostfixInstance(root, free_port(), f"herald-bench-postfix-{uuid.uuid4().hex[:8]}")
    started = False
    try:
        root.chmod(0o755)  # the unprivileged daemons must reach the queue directory
        instance.config_dir.mkdir()
        instance.queue_dir.mkdir()
        instance.data_dir.mkdir()
        os.chown(instance.data_dir, owner.pw_uid, owner.pw_gid)
        (instance.config_dir / "main.cf").write_text(
            instance_main_cf(instance, relay_port, extra))
        (instance.config_dir / "master.cf").write_text(
            instance_master_cf(MASTER_TEMPLATE.read_text(), f"127.0.0.1:{instance.port}"))
        _postfix(instance, "check")
        started = True  # even a failed start may have left a master behind
        _postfix(instance, "start")
        _wait_listening(instance.port, timeout=20)
        yield instance
    finally:
        try:
            if started:
                _stop(instance)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def relay_throughput(instance: PostfixInstance, messages: int, size: int, sessions: int,
                     timeout: float) -> RelayResult:
    """Time ``smtp-source`` -> Postfix -> relay until Postfix's queue is empty again."""
    command = [SMTP_SOURCE, "-c", "-l", str(size), "-m", str(messages), "-s", str(sessions),
               "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{instance.port}"]
    started = time.monotonic()
    deadline = started + timeout
    try:
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=timeout, check=True)
    except subprocess.TimeoutExpired as error:
        raise PostfixError(f"smtp-source did not finish {messages} messages in {timeout:.0f}s") \
            from error
    except subprocess.CalledProcessError as error:
        raise PostfixError(f"smtp-source failed: {error.stderr.decode(errors='replace')[-300:]}") \
            from error
    while (waiting := queue_length(instance)) > 0:
        if time.monotonic() > deadline:
            raise PostfixError(f"Postfix still had {waiting} messages queued after {timeout:.0f}s")
        time.sleep(POLL_SECONDS)
    seconds = time.monotonic() - started
    return RelayResult(messages, size, sessions, seconds, _count_sent(instance, messages))


def measure(relay_port: int, messages: int, size: int, sessions: int,
            timeout: float = 300.0, extra: Mapping[str, str] | None = None) -> RelayResult:
    """Start an instance relaying to ``relay_port``, time ``messages`` through it, stop it."""
    with running_instance(relay_port, extra) as instance:
        return relay_throughput(instance, messages, size, sessions, timeout)


def queue_length(instance: PostfixInstance) -> int:
    """Messages in the instance's queue: ``postqueue -j`` prints one JSON object per message."""
    try:
        listing = subprocess.run([POSTQUEUE, "-c", str(instance.config_dir), "-j"],
                                 capture_output=True, timeout=30, check=True).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        raise PostfixError(f"postqueue -j failed: {error}") from error
    return sum(1 for line in listing.splitlines() if line.strip())


def _count_sent(instance: PostfixInstance, expected: int, wait: float = 5.0) -> int:
    """Deliveries logged as sent; postlogd may write the last lines a moment after the queue
    empties."""
    deadline = time.monotonic() + wait
    while True:
        try:
            sent = len(_SENT.findall(instance.maillog.read_bytes()))
        except FileNotFoundError:
            sent = 0
        if sent >= expected or time.monotonic() > deadline:
            return sent
        time.sleep(POLL_SECONDS)


def _postfix(instance: PostfixInstance, action: str) -> None:
    try:
        result = subprocess.run([POSTFIX, "-c", str(instance.config_dir), action],
                                capture_output=True, timeout=60)
    except subprocess.TimeoutExpired as error:
        raise PostfixError(f"postfix {action} did not finish in 60s") from error
    if result.returncode != 0:
        output = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise PostfixError(f"postfix {action} failed: {output[-500:]}")


def _wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(POLL_SECONDS)
    raise PostfixError(f"the Postfix smtpd listener on 127.0.0.1:{port} did not come up")


def _stop(instance: PostfixInstance) -> None:
    """``postfix stop``, then make sure nothing of this instance keeps running."""
    master = _master_pid(instance)
    try:
        _postfix(instance, "stop")
    except PostfixError:
        pass
    if master is not None and not _wait_gone([master], 15):
        os.kill(master, signal.SIGKILL)
    leftovers = _instance_processes(instance)
    if leftovers and not _wait_gone(leftovers, 5):
        for pid in leftovers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _master_pid(instance: PostfixInstance) -> int | None:
    try:
        return int((instance.queue_dir / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _instance_processes(instance: PostfixInstance) -> list[int]:
    """Processes whose environment names this instance's config directory: master passes
    ``MAIL_CONFIG`` on to every daemon it spawns."""
    marker = b"MAIL_CONFIG=" + str(instance.config_dir).encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes() + b"\0"
        except OSError:
            continue
        if marker in environ and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def _alive(pid: int) -> bool:
    """Running (a zombie already waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
