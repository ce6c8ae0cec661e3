"""Fetching an MTA-STS policy file over HTTPS (RFC 8461 §3.3), with httpx.

``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``: the host name is resolved through Herald's
resolver (``[mta] resolver``, like every other name), vetted like every outbound HTTP call
(``[webhooks] allow``: no private address unless listed) and the connection goes to that address
with the host name as SNI, ``Host`` and the name the certificate must match (trust:
:func:`mta.tls.trust.verifying_context`). No redirects (§3.3), a 200 with ``text/plain`` only,
at most ``max_bytes`` read, the whole fetch within ``timeout``. Every failure is a
:class:`StsFetchError` (RFC 8460 result type ``sts-policy-fetch-error`` or ``sts-webpki-invalid``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Awaitable, Callable

import httpx

from engine.outbox.targets import Target, TargetRefused, vet
from engine.outbox.transport import OutboundPolicy
from mta.errors import MtaError
from mta.tls.trust import verifying_context

POLICY_PATH = "/.well-known/mta-sts.txt"


class StsFetchError(MtaError):
    def __init__(self, domain: str, detail: str, result_type: str = "sts-policy-fetch-error"):
        super().__init__(f"MTA-STS policy for {domain}: {detail}")
        self.result_type = result_type


async def fetch_policy_text(domain: str, *, resolve: Callable[[str], Awaitable[list[str]]],
                            port: int = 443, timeout: float = 10.0, max_bytes: int = 65536,
                            ca_file: str | None = None,
                            outbound: OutboundPolicy | None = None) -> str:
    """``outbound``: the addresses must pass ``[webhooks] allow`` (the composition root always
    gives it; without it any address is dialled)."""
    host = f"mta-sts.{domain}"
    try:
        async with asyncio.timeout(timeout):
            addresses = await resolve(host)
            if not addresses:
                raise StsFetchError(domain, f"{host} has no address")
            address = addresses[0]
            if outbound is not None:
                try:
                    address = vet(Target("https", host, port), addresses, outbound.allow)
                except TargetRefused as exc:
                    raise StsFetchError(domain, f"refused: {exc}") from None
            return await _get(domain, host, address, port, timeout, max_bytes, ca_file)
    except TimeoutError:
        raise StsFetchError(domain, f"no answer from {host} within {timeout:g}s") from None
    except StsFetchError:
        raise
    except MtaError as exc:  # DNS failures
        raise StsFetchError(domain, str(exc)) from None


async def _get(domain: str, host: str, address: str, port: int, timeout: float,
               max_bytes: int, ca_file: str | None) -> str:
    literal = f"[{address}]" if ipaddress.ip_address(address).version == 6 else address
    url = f"https://{literal}:{port}{POLICY_PATH}"
    async with httpx.AsyncClient(verify=verifying_context(ca_file), follow_redirects=False,
                                 trust_env=False, timeout=timeout) as client:
        try:
            request = client.build_request(
                "GET", url, headers={"Host": host if port == 443 else f"{host}:{port}"},
                extensions={"sni_hostname": host})
            response = await client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    note = " (redirects are not followed)" if response.is_redirect else ""
                    raise StsFetchError(domain, f"https://{host}{POLICY_PATH} answered "
                                                f"{response.status_code}{note}")
                media = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if media != "text/plain":
                    raise StsFetchError(domain, f"content type {media or 'missing'!r}, "
                                                "not text/plain")
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        raise StsFetchError(domain, f"policy larger than {max_bytes} bytes")
            finally:
                await response.aclose()
        except httpx.ConnectError as exc:
            if _verification_failed(exc):
                raise StsFetchError(domain, f"certificate of {host} does not verify: {exc}",
                                    "sts-webpki-invalid") from None
            raise StsFetchError(domain, f"cannot connect to {host}: {exc}") from None
        except httpx.HTTPError as exc:
            raise StsFetchError(domain, f"fetch failed: {type(exc).__name__}: {exc}") from None
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise StsFetchError(domain, "policy is not UTF-8", "sts-policy-invalid") from None


def _verification_failed(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
