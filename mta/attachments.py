"""Attachments of ``POST /v1/messages``: validated and turned into MIME parts (pure).

Each is ``{"filename", "content_type", "content"}`` with ``content`` in base64; at most
:data:`MAX_ATTACHMENTS`, each at most :data:`MAX_ATTACHMENT_BYTES` decoded (the whole message
is bounded by ``[mta] max_message_size`` as well). File names are printable text without
path separators (non-ASCII names are sent RFC 2231-encoded); content types are ``type/subtype``
in lower case, and not ``multipart/*`` or ``message/*`` (which would change the message's
structure).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.mime.base import MIMEBase
from typing import Any

from mta.errors import InvalidMessage

MAX_ATTACHMENTS = 20
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
CONTENT_TYPE_PATTERN = "^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$"
FILENAME_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029/\\\\]{1,255}$"
_CONTENT_TYPE = re.compile(CONTENT_TYPE_PATTERN[1:-1])  # used with fullmatch
_FILENAME = re.compile(FILENAME_PATTERN[1:-1])

# The JSON Schema of one attachment (the OpenAPI document and the request check share it).
ATTACHMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["filename", "content_type", "content"],
    "additionalProperties": False,
    "properties": {
        "filename": {"type": "string", "pattern": FILENAME_PATTERN,
                     "description": "shown to the recipient; no '/' or '\\\\'"},
        "content_type": {"type": "string", "pattern": CONTENT_TYPE_PATTERN,
                         "description": "e.g. application/pdf; not multipart/* or message/*"},
        "content": {"type": "string", "contentEncoding": "base64",
                    "description": f"base64, at most {MAX_ATTACHMENT_BYTES} bytes decoded"},
    },
}


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes

    def part(self) -> MIMEBase:
        maintype, subtype = self.content_type.split("/", 1)
        part = MIMEBase(maintype, subtype)
        part.set_payload(base64.encodebytes(self.data).decode("ascii").replace("\n", "\r\n"))
        part["Content-Transfer-Encoding"] = "base64"
        name: str | tuple[str, str, str] = (
            self.filename if self.filename.isascii() else ("utf-8", "", self.filename))
        part.add_header("Content-Disposition", "attachment", filename=name)
        return part


def parse_attachments(value: Any) -> list[Attachment]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ATTACHMENTS:
        raise InvalidMessage(f"attachments: a list of at most {MAX_ATTACHMENTS}")
    attachments = []
    for index, item in enumerate(value):
        where = f"attachments[{index}]"
        if not isinstance(item, dict) or set(item) != {"filename", "content_type", "content"}:
            raise InvalidMessage(f"{where}: an object with exactly filename, content_type and "
                                 "content")
        filename, content_type, content = (item["filename"], item["content_type"],
                                           item["content"])
        if not isinstance(filename, str) or not _FILENAME.fullmatch(filename):
            raise InvalidMessage(f"{where}.filename: 1-255 printable characters, no '/' or "
                                 "'\\'")
        if not isinstance(content_type, str) or not _CONTENT_TYPE.fullmatch(content_type) \
                or content_type.startswith(("multipart/", "message/")):
            raise InvalidMessage(f"{where}.content_type: a lower-case type/subtype such as "
                                 "application/pdf (not multipart/* or message/*)")
        if not isinstance(content, str) or len(content) > MAX_ATTACHMENT_BYTES * 4 // 3 + 4:
            raise InvalidMessage(f"{where}.content: base64 of at most "
                                 f"{MAX_ATTACHMENT_BYTES} bytes")
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidMessage(f"{where}.content: not valid base64") from None
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise InvalidMessage(f"{where}.content: {len(data)} bytes; the limit is "
                                 f"{MAX_ATTACHMENT_BYTES}")
        attachments.append(Attachment(filename, content_type, data))
    return attachments
