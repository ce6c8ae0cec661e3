"""``[webhooks] allow`` governs Herald's other outbound HTTP calls too: MTA-STS policy fetches and
TLS-RPT report POSTs to a private address are refused unless the host is allow-listed, and the
TLS name checked stays the host name while the vetted address is dialled."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.outbox.targets import parse_allow
from engine.outbox.transport import HostResolver, OutboundPolicy
from mta.tls.rpt_send import _post
from mta.tls.sts_fetch import StsFetchError, fetch_policy_text
from tests.support.tls_pki import HttpsServer, PkiCa

POLICY = "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmax_age: 600\n"


async def loopback(_host: str) -> list[str]:
    return ["127.0.0.1"]


def policy(*allow: str) -> OutboundPolicy:
    return OutboundPolicy(parse_allow(allow), HostResolver())


async def test_mta_sts_fetches_obey_the_allow_list(tmp_path: Path) -> None:
    ca = PkiCa()
    route = {"/.well-known/mta-sts.txt": (200, "text/plain", POLICY.encode())}
    async with HttpsServer(ca.issue("mta-sts.example.test"), route) as server:
        with pytest.raises(StsFetchError, match=r"refused: mta-sts\.example\.test resolves to "
                                                r"non-public address 127\.0\.0\.1"):
            await fetch_policy_text("example.test", resolve=loopback, port=server.port,
                                    ca_file=str(ca.write(tmp_path)), outbound=policy())
        text = await fetch_policy_text("example.test", resolve=loopback, port=server.port,
                                       ca_file=str(ca.write(tmp_path)),
                                       outbound=policy("mta-sts.example.test"))
    assert text == POLICY


async def test_tls_rpt_posts_obey_the_allow_list(tmp_path: Path) -> None:
    ca = PkiCa()
    async with HttpsServer(ca.issue("127.0.0.1")) as collector:
        uri = f"https://127.0.0.1:{collector.port}/tlsrpt"
        refused = await _post(uri, b"report", str(ca.write(tmp_path)), 5.0, policy())
        assert refused.startswith(f"{uri}: refused (127.0.0.1 resolves to non-public")
        assert collector.record.posted.empty()
        sent = await _post(uri, b"report", str(ca.write(tmp_path)), 5.0,
                           policy(f"127.0.0.1:{collector.port}"))
    assert sent == f"{uri}: 200"
    assert collector.record.posted.qsize() == 1
