"""The suppression list as CSV (pure): import rows into entries with errors that name the line,
and export entries. Columns: ``email,reason,category,source,message_id,detail,created_at``;
an import needs only ``email`` (reason defaults to ``manual``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from engine.addresses import AddressError
from mta.suppression.addresses import normalise
from mta.suppression.rules import MANUAL, Suppression
from mta.suppression.store import Entry

EXPORT_COLUMNS = ("email", "reason", "category", "source", "message_id", "detail", "created_at")
MAX_IMPORT_ROWS = 100_000


class CsvError(ValueError):
    """A CSV import is malformed; the message names the line and column."""


class CsvValueError(CsvError):
    """A well-formed CSV row holds a value that fails validation (an address, a reason)."""


def parse_import(text: str, source: str) -> list[Suppression]:
    # CR, LF or CRLF line ends; strict: a broken quote is an error, not a guess
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        return _rows(reader, source)
    except csv.Error as exc:  # e.g. a bare CR inside an unquoted field
        raise CsvError(f"line {reader.line_num}: {exc}") from None


def _rows(reader: csv.DictReader[str], source: str) -> list[Suppression]:
    if reader.fieldnames is None or "email" not in [f.strip() for f in reader.fieldnames]:
        raise CsvError("line 1: the header must name an 'email' column")
    entries: list[Suppression] = []
    for row in reader:
        line = reader.line_num
        if len(entries) >= MAX_IMPORT_ROWS:
            raise CsvError(f"line {line}: more than {MAX_IMPORT_ROWS} rows; split the file")
        values = {(k or "").strip(): (v or "").strip() for k, v in row.items()
                  if isinstance(v, str)}
        if None in row:
            raise CsvError(f"line {line}: more fields than the header names")
        try:
            email = normalise(values.get("email", ""))
        except AddressError as exc:
            raise CsvValueError(f"line {line}: email: {exc}") from None
        try:
            entries.append(Suppression(email, values.get("reason") or MANUAL,
                                       values.get("category", ""), source,
                                       detail=values.get("detail", "")[:1000]))
        except ValueError as exc:
            raise CsvValueError(f"line {line}: {exc}") from None
    return entries


def export_header() -> str:
    return _line(EXPORT_COLUMNS)


def export_rows(entries: Iterable[Entry]) -> Iterator[str]:
    for e in entries:
        yield _line((e.email, e.reason, e.category, e.source,
                     str(e.message_id) if e.message_id else "", _safe(e.detail),
                     e.created_at.isoformat()))


def _safe(text: str) -> str:
    """No formula injection when the export is opened in a spreadsheet."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _line(values: Iterable[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(list(values))
    return out.getvalue()
