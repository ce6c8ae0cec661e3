"""The header fields a DKIM signature covers: the h= list, the bytes hashed for them (RFC 6376
5.4, relaxed) and the From value, per message.

Two ways to the same result (property-tested to agree):

* :func:`plain_signed_fields`, for a *plain* header section: CRLF line endings only, no folded
  field, every line ``name:value``. Generated mail is plain and repeats most of its header lines
  verbatim from message to message (From, Subject, Date, MIME and list headers), so each distinct
  line is looked up once (a bounded cache of its lower-case name and relaxed form) and a message
  costs a few C-level calls: one split at CRLF, one dict look-up per line through ``map``, one
  join. What the sequence of field names decides (h=, the hash order, where From is) is worked
  out once per sequence. None for any other header section.
* :func:`parsed_signed_fields`, over the fields as dkimpy's ``rfc822_parse`` gives them
  (:func:`mta.dkim.canonical.split_message`): any message.

Policy: the headers in :data:`SIGNED_HEADERS` that are present are signed, in message order;
From is listed once more than it occurs (:data:`OVERSIGNED_HEADERS`), so that none can be added.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import filterfalse
from typing import Final, TypeAlias

from mta.dkim.canonical import CR, LF, TAB, WSP_RUN, Header, relaxed_header

#: Signed when present, in message order (RFC 6376 5.4.1, RFC 8058 for List-Unsubscribe-Post).
SIGNED_HEADERS: Final = frozenset(
    b"from to cc subject date message-id reply-to mime-version content-type "
    b"content-transfer-encoding list-unsubscribe list-unsubscribe-post list-id feedback-id "
    b"in-reply-to references".split()
)
#: Listed once more in h= than they occur, so that none can be added.
OVERSIGNED_HEADERS: Final = (b"from",)

#: Distinct header lines kept canonicalised (a campaign repeats some ten; each message adds a
#: few lines of its own, so the cache is emptied every few thousand messages).
LINE_CACHE_SIZE: Final = 8192
LAYOUT_CACHE_SIZE: Final = 1024

NAME_CACHE_SIZE: Final = 1024

# A field name as dkimpy reads one: printable, up to the first colon.
_FIELD_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x7e]+")

# field name -> its lower-case form if signed, else b"" (valid names only)
_field_names: dict[bytes, bytes] = {}

# line -> its lower-case field name if signed, else b"" / its relaxed form + CRLF if signed,
# else b"". Filled together, emptied together.
_line_names: dict[bytes, bytes] = {}
_line_forms: dict[bytes, bytes] = {}
_is_known_line: Final = _line_names.__contains__
_line_name: Final = _line_names.__getitem__
_line_form: Final = _line_forms.__getitem__


#: What a signature of one message covers in its header: the h= list; the relaxed forms of the
#: selected fields each with CRLF, in h= order (RFC 6376 5.4.2), as hashed; the value of the
#: first From field without the line ending of its last line (None without a From field).
#: A plain tuple: one is built per message.
SignedFields: TypeAlias = tuple[tuple[bytes, ...], bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a sequence of field names decides: h=, the lines hashed in h= order (None: every
    line in message order, unsigned lines hashing to nothing), the line index of the first
    From (-1: none)."""

    include: tuple[bytes, ...]
    hash_order: tuple[int, ...] | None
    from_index: int


_layouts: dict[tuple[bytes, ...], _Layout] = {}


def plain_signed_fields(head: bytes) -> SignedFields | None:
    """The signed fields of a plain header section (``head`` without the CRLF that ends its
    last line); None unless it is plain."""
    lines = head.split(b"\r\n")
    missing = list(filterfalse(_is_known_line, lines))
    if missing and not _learn_lines(lines, missing):
        return None
    names = tuple(map(_line_name, lines))
    layout = _layouts.get(names) or _learn_layout(names)
    if layout.hash_order is None:
        hashed = b"".join(map(_line_form, lines))
    else:
        hashed = b"".join([_line_forms[lines[i]] for i in layout.hash_order])
    if layout.from_index < 0:
        return layout.include, hashed, None
    return layout.include, hashed, lines[layout.from_index].partition(b":")[2]


def _learn_lines(lines: Sequence[bytes], missing: Sequence[bytes]) -> bool:
    """Canonicalise and cache the ``missing`` lines of ``lines`` by
    :func:`mta.dkim.canonical.relaxed_field`'s rules; False if one is not plain."""
    if len(_line_names) + len(missing) > LINE_CACHE_SIZE:
        _line_names.clear()
        _line_forms.clear()
        missing = lines
    for line in missing:
        name, colon, value = line.partition(b":")
        lower = _field_names.get(name)
        if lower is None:
            lower = _learn_field_name(name)
        if lower is None or not colon or CR in value or LF in value:
            return False
        _line_names[line] = lower
        if not lower:
            _line_forms[line] = b""
        elif TAB in value or value.find(b"  ") >= 0:
            _line_forms[line] = lower + b":" + WSP_RUN.sub(b" ", value).strip() + b"\r\n"
        else:
            _line_forms[line] = lower + b":" + value.strip() + b"\r\n"
    return True


def _learn_field_name(name: bytes) -> bytes | None:
    """A valid field name's lower-case form if signed, else b"" (cached); None if invalid."""
    lower = _field_names.get(name)
    if lower is not None:
        return lower
    if _FIELD_NAME.fullmatch(name) is None:
        return None
    if len(_field_names) >= NAME_CACHE_SIZE:
        _field_names.clear()
    lower = _field_names[name] = name.lower() if name.lower() in SIGNED_HEADERS else b""
    return lower


def _learn_layout(names: tuple[bytes, ...]) -> _Layout:
    """The layout for a sequence of field names (b"" for unsigned fields), cached."""
    signed = [name for name in names if name]
    bottom_up: dict[bytes, list[int]] = {}
    for index, name in enumerate(names):
        if name:
            bottom_up.setdefault(name, []).append(index)
    # A name listed n times selects its occurrences from the bottom up (RFC 6376 5.4.2).
    order = tuple(bottom_up[name].pop() for name in signed)
    repeated = len(set(signed)) != len(signed)
    layout = _Layout((*signed, *OVERSIGNED_HEADERS), order if repeated else None,
                     names.index(b"from") if b"from" in names else -1)
    if len(_layouts) >= LAYOUT_CACHE_SIZE:
        _layouts.clear()
    _layouts[names] = layout
    return layout


def parsed_signed_fields(headers: Sequence[Header]) -> SignedFields:
    """The signed fields of a parsed header section (fields as dkimpy's ``rfc822_parse``
    gives them: values keep their folding and end with CRLF)."""
    occurrences: dict[bytes, list[bytes]] = {}
    present: list[bytes] = []
    from_value = None
    for name, value in headers:
        lower = name.lower()
        if lower in SIGNED_HEADERS:
            present.append(lower)
            occurrences.setdefault(lower, []).append(relaxed_header(name, value))
            if from_value is None and lower == b"from":
                from_value = value[:-2]
    hashed = b"".join(occurrences[lower].pop() + b"\r\n" for lower in present)
    return (*present, *OVERSIGNED_HEADERS), hashed, from_value
