"""Reading the unit files in systemd/ the way systemd does, for the tests: sections of
``Key=Value`` lines (repeatable keys kept in order), drop-ins in ``UNIT.d/*.conf`` applied after
the unit, ``%i`` expanded, an empty assignment resetting a list."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
INSTALLED_PATH = "/usr/local/bin/herald"

Unit = dict[str, dict[str, list[str]]]


def _parse_into(unit: Unit, text: str) -> None:
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            unit.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        values = unit.setdefault(section, {}).setdefault(key.strip(), [])
        if value.strip() == "":
            values.clear()
        else:
            values.append(value.strip())


def load_unit(name: str) -> Unit:
    """``herald@mta.service`` -> the template with %i = mta, plus its drop-ins."""
    prefix, _, rest = name.partition("@")
    instance, _, suffix = rest.rpartition(".")
    file_name = f"{prefix}@.{suffix}" if rest else name
    unit: Unit = {}
    _parse_into(unit, (SYSTEMD_DIR / file_name).read_text())
    directories = [SYSTEMD_DIR / f"{file_name}.d"]
    if file_name != name:
        directories.append(SYSTEMD_DIR / f"{name}.d")
    for directory in directories:
        for drop_in in sorted(directory.glob("*.conf")):
            _parse_into(unit, drop_in.read_text())
    if rest:
        for section in unit.values():
            for key, values in section.items():
                section[key] = [value.replace("%i", instance) for value in values]
    return unit


def target_units(target: str = "herald.target") -> list[str]:
    unit: Unit = {}
    _parse_into(unit, (SYSTEMD_DIR / target).read_text())
    return [name for line in unit["Unit"]["Wants"] for name in line.split()]


def herald_binary() -> str:
    """The installed ``herald`` next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "herald"
    if beside.exists():
        return str(beside)
    found = shutil.which("herald")
    assert found, "herald is not installed (pip install -e .)"
    return found


def exec_start(unit: Unit) -> list[str]:
    """The unit's ExecStart command with the installed path replaced by the real binary."""
    [line] = unit["Service"]["ExecStart"]
    argv = shlex.split(line)
    assert argv[0] == INSTALLED_PATH, f"ExecStart should run {INSTALLED_PATH}: {line}"
    return [herald_binary(), *argv[1:]]
