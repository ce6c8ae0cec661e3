"""Webhook steps: POST JSON to public addresses only (unless allow-listed), bounded retries.

The address check resolves the host and refuses loopback, private, link-local, multicast and
reserved addresses, so a workflow cannot be used to reach internal services; operators list
exceptions in ``[automation] webhook_allow`` ("host" or "host:port").
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import orjson

from automation.runtime.interpreter import WebhookEffect

log = logging.getLogger("herald.automation.webhooks")


@dataclass(frozen=True, slots=True)
class WebhookResult:
    ok: bool
    detail: str


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_global and not ip.is_multicast


async def check_target(url: str, allow: tuple[str, ...]) -> str | None:
    """None when ``url`` may be called, else why not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "only http(s) URLs with a host"
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if host in allow or f"{host}:{port}" in allow:
        return None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc.strerror or exc}"
    for info in infos:
        address = str(info[4][0])
        if not _public(address):
            return f"{host} resolves to non-public address {address} (not in webhook_allow)"
    return None


async def call(effect: WebhookEffect, allow: tuple[str, ...],
               client: httpx.AsyncClient | None = None) -> WebhookResult:
    refusal = await check_target(effect.url, allow)
    if refusal is not None:
        return WebhookResult(False, f"refused: {refusal}")
    body = orjson.dumps(effect.body, default=str)
    headers = {"Content-Type": "application/json", **dict(effect.headers)}
    owned = client is None
    client = client or httpx.AsyncClient(follow_redirects=False)
    detail = ""
    try:
        for attempt in range(1 + effect.retries):
            try:
                response = await client.post(effect.url, content=body, headers=headers,
                                             timeout=effect.timeout)
            except httpx.HTTPError as exc:
                detail = f"attempt {attempt + 1}: {type(exc).__name__}"
                continue
            if response.status_code < 500 and response.status_code != 429:
                ok = response.status_code < 400
                return WebhookResult(ok, f"HTTP {response.status_code}")
            detail = f"attempt {attempt + 1}: HTTP {response.status_code}"
            await asyncio.sleep(min(5.0, 0.2 * 2 ** attempt))  # back off between retries
    finally:
        if owned:
            await client.aclose()
    return WebhookResult(False, f"gave up: {detail}")
