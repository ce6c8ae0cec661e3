"""Keys that sign the links Herald puts in mail (unsubscribe now, tracking later): a key id and
a secret each; the first signs, all verify, so a key can be rotated while old links still work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

KID = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True, slots=True)
class LinkKeys:
    current: str
    secrets: Mapping[str, bytes]

    @classmethod
    def parse(cls, items: Sequence[str]) -> LinkKeys:
        """``["kid:secret", ...]`` (the first signs); raises ValueError naming the problem."""
        secrets: dict[str, bytes] = {}
        for item in items:
            kid, sep, secret = item.partition(":")
            if not sep or not KID.match(kid):
                raise ValueError("each entry must be 'KID:SECRET' with KID of 1-8 lower-case "
                                 "letters or digits")
            if len(secret) < 16:
                raise ValueError(f"the secret of key {kid!r} must be at least 16 characters")
            if kid in secrets:
                raise ValueError(f"key id {kid!r} is listed twice")
            secrets[kid] = secret.encode()
        if not secrets:
            raise ValueError("at least one key is needed")
        return cls(next(iter(secrets)), secrets)
