"""The MTA's error tree. Library exceptions (dnspython, aiosmtplib, dkimpy, cryptography) are
translated into these at the module that talks to the library."""

from engine.errors import HeraldError


class MtaError(HeraldError):
    """Base of every MTA error."""


class PermanentFailure(MtaError):
    """Retrying cannot help (NXDOMAIN, null MX, 5xx): the recipient bounces."""


class TemporaryFailure(MtaError):
    """Try again later (SERVFAIL, timeouts, 4xx, connection failures)."""


class DkimError(MtaError):
    """A DKIM key cannot be loaded or a message cannot be signed."""


class InvalidMessage(MtaError):
    """A message submitted for delivery is malformed; the message says which part."""
