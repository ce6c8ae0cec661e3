"""The stats the API and ``herald stats`` show: counters read, then shaped by
:mod:`automation.stats.report` (one function each for one workflow and for all of them)."""

from __future__ import annotations

from datetime import date
from typing import Any

import asyncpg

from automation.loading.catalog import Catalog
from automation.stats import report, store


class UnknownWorkflow(LookupError):
    """Neither loaded nor ever counted."""


async def workflow_stats(connection: asyncpg.Connection, catalog: Catalog, name: str,
                         since: date | None, metric: str) -> dict[str, Any]:
    workflow = catalog.current.get(name)
    by_step = await store.step_counts(connection, name, since)
    if workflow is None and not by_step:
        exists = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM workflow_stats WHERE workflow = $1)", name)
        if not exists:
            raise UnknownWorkflow(f"no workflow named {name!r}")
    result = report.build(name, workflow, by_step, since, metric)
    result["counted_until"] = (await store.lag(connection))["updated_at"]
    return result


async def all_stats(connection: asyncpg.Connection, catalog: Catalog,
                    since: date | None) -> dict[str, Any]:
    by_workflow = await store.workflow_counts(connection, since)
    result = report.summary(by_workflow, [w.name for w in catalog.ordered()], since)
    result["counted_until"] = (await store.lag(connection))["updated_at"]
    return result
