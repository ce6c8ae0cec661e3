"""``herald bounce parse FILE...``: one JSON line per file with what it reports. The shell
around ``parse_report``: reading files, printing, and one error line per unreadable file."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

import orjson

from mta.bounces.mime import MAX_BYTES
from mta.bounces.parse import parse_report

READ_LIMIT = MAX_BYTES  # the parser reads no further


def parse_files(paths: Iterable[str], out: TextIO | None = None,
                err: TextIO | None = None) -> int:
    """Print a JSON line per readable file; 0 when every file was read, 1 otherwise."""
    out = out or sys.stdout
    err = err or sys.stderr
    failed = False
    for path in paths:
        try:
            with open(path, "rb") as handle:
                raw = handle.read(READ_LIMIT)
        except OSError as exc:
            print(f"herald: error: cannot read {path}: {exc.strerror or exc}", file=err)
            failed = True
            continue
        line = {"file": path, **parse_report(raw).to_json()}
        out.write(orjson.dumps(line).decode() + "\n")
    out.flush()
    return 1 if failed else 0
