"""Which domains an API key may send mail from (pure; ``POST /v1/messages`` and, later, SMTP
submission ask the same question).

A key created with ``--from-domain D`` (repeatable) may send from exactly those domains. A key
created without any may send only from the domains Herald signs for (the ``[[mta.dkim]]``
keys): the operator's own domains, never someone else's. With neither, it cannot send, and
the refusal says how to fix that. Sub-domains are separate domains: list each one.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.addresses import Address
from engine.keys import sender_domain


@dataclass(frozen=True, slots=True)
class SenderPolicy:
    dkim_domains: frozenset[str]  # A-labels, lower case

    @classmethod
    def from_dkim(cls, domains: tuple[str, ...] | list[str]) -> SenderPolicy:
        return cls(frozenset(sender_domain(domain) for domain in domains))

    def domains_for(self, key_domains: frozenset[str]) -> frozenset[str]:
        return key_domains or self.dkim_domains

    def refusal(self, key_domains: frozenset[str], sender: Address) -> str | None:
        """Why a key with ``key_domains`` may not send as ``sender``, or None when it may."""
        allowed = self.domains_for(key_domains)
        domain = sender.ascii_domain.lower()
        if domain in allowed:
            return None
        if not allowed:
            return (f"this key may not send from {domain}: create a key with "
                    f"'herald keys create --from-domain {domain}', or configure an [[mta.dkim]] "
                    "key for the domain")
        return (f"this key may not send from {domain} (it may send from "
                f"{', '.join(sorted(allowed))})")
