"""Refuse to send mail under ``localhost`` identities: real MX servers reject it.

``herald run`` checks the roles it starts: the ``mta`` role's EHLO name and bounce domain, the
``automation`` role's From address. When one is ``localhost``, every role still starts (so a
first ``herald run`` works), but the ``mta`` role holds delivery, keeping mail queued, and the
log names the keys to set. A configured route (``[mta] route`` or ``routes``: staging, tests,
a smarthost) lifts the check. Pure.
"""

from __future__ import annotations

from engine.addresses import AddressError
from engine.mailboxes import parse_mailbox
from herald.settings import Settings

LOCAL_NAMES = ("localhost", "localhost.localdomain")


def is_local_name(name: str) -> bool:
    """``localhost``, ``localhost.localdomain``, anything under ``.localhost``, or empty."""
    text = name.strip().rstrip(".").lower()
    return not text or text in LOCAL_NAMES or text.endswith(".localhost")


def identity_problems(settings: Settings, roles: list[str], *,
                      route_exempts: bool = True) -> list[str]:
    """One sentence per identity that would send mail as localhost, naming the key to set;
    none when a route is configured (unless ``route_exempts`` is False: `herald check`)."""
    mta = settings.mta
    if route_exempts and (mta.route is not None or mta.routes):
        return []
    problems: list[str] = []
    if "mta" in roles:
        if is_local_name(mta.ehlo_name):
            problems.append(
                f"mta.ehlo_name is {mta.ehlo_name!r}: set [mta] ehlo_name "
                "(HERALD_MTA_EHLO_NAME) to this server's public name, the one its IP's PTR "
                "record gives")
        if is_local_name(mta.bounce_domain):
            problems.append(
                f"mta.bounce_domain is {mta.bounce_domain!r}: set [mta] bounce_domain "
                "(HERALD_MTA_BOUNCE_DOMAIN) to a domain whose MX points at this server, "
                "e.g. bounces.example.com")
    if "automation" in roles:
        domain = _domain_of(settings.automation.from_address)
        if domain is None or is_local_name(domain):
            problems.append(
                f"automation.from_address is {settings.automation.from_address!r}: set "
                "[automation] from_address (HERALD_AUTOMATION_FROM_ADDRESS) to an address of "
                "your sending domain, e.g. 'Shop <news@example.com>'")
    return problems


def refusal(problems: list[str]) -> str:
    """The one message ``herald run`` logs when it holds delivery."""
    return ("refusing to send mail as localhost (receiving servers reject it): "
            + "; ".join(problems)
            + "; or, for testing, send everything to one server with [mta] route "
              "(HERALD_MTA_ROUTE=127.0.0.1:2525); `herald init --domain DOMAIN` writes a config")


def _domain_of(address: str) -> str | None:
    try:
        return parse_mailbox(address)[1].domain
    except (AddressError, ValueError):
        return None
