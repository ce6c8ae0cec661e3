"""A submission server on loopback ports with a throwaway certificate, and keys for it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from engine.database import Database
from engine.keys import create_key
from engine.values import HostPort
from mta.senders import SenderPolicy
from mta.submission.service import SubmissionService
from mta.submission.settings import SubmissionSettings
from tests.support.mta import identity_for, mta_settings
from tests.support.smtp_servers import self_signed_pem


def certificate_files(directory: Path) -> tuple[Path, Path]:
    cert, key = self_signed_pem()
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    return directory / "cert.pem", directory / "key.pem"


def submission_settings(tmp_path: Path, **overrides: Any) -> SubmissionSettings:
    cert, key = certificate_files(tmp_path)
    base = SubmissionSettings(listen=HostPort("127.0.0.1", 0),
                              listen_tls=HostPort("127.0.0.1", 0), tls_cert=cert, tls_key=key,
                              allow_plain_auth_from=())
    return dataclasses.replace(base, **overrides)


@asynccontextmanager
async def submission_service(database: Database, tmp_path: Path,
                             **overrides: Any) -> AsyncIterator[SubmissionService]:
    settings = submission_settings(tmp_path, **overrides)
    assert settings.tls_cert is not None and settings.tls_key is not None
    service = SubmissionService(database, settings,
                                await identity_for(database, mta_settings()),
                                SenderPolicy.from_dkim(["herald.test"]), "submit.herald.test",
                                (settings.tls_cert, settings.tls_key))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def ports(service: SubmissionService) -> tuple[int, int]:
    """(STARTTLS port, implicit TLS port)."""
    assert service.server is not None
    return service.server.ports["listen"], service.server.ports["listen_tls"]


async def new_key(database: Database, *scopes: str,
                  from_domains: tuple[str, ...] = ("shop.test",)) -> str:
    async with database.connection() as connection:
        return (await create_key(connection, "mailer", scopes or ("messages:write",),
                                 from_domains=from_domains)).token
