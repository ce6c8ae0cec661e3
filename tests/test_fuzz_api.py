"""Standing checks (issue 12): schemathesis against the running app's ``/openapi.json`` with
every check, and generated hostile payloads at every endpoint. No 5xx, and no response that
contradicts the document. Bounded: a few examples per operation, the whole file in ~a minute."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.app import RunningApp, running_app

EXAMPLES_PER_OPERATION = 15
# Every check stays on, with three settings the document itself calls for:
# - a schema-valid request may still get the 400/422 the document lists for what JSON Schema
#   cannot say (whether an address parses, a time zone exists, raw MIME is well-formed);
# - a schema-violating body that is also too large is rejected with the documented 413;
# - the pixel answers every request with its GIF, and the Segment dialect answers 200 and
#   lists the messages it set aside, both as documented, so schema-violating requests are not
#   "rejected" there.
CONFIG = {
    "checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "413", "422", "429"]},
               # A schema-violating body may also be over the endpoint's size limit: its 413
               # (documented) is a rejection too. The rest is schemathesis's default list.
               "negative_data_rejection": {
        "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415",
                              "422", "428", "429", "5xx"]}},
    "operations": [
        {"include-path": "/v1/pixel.gif",
         "checks": {"negative_data_rejection": {"enabled": False}}},
        {"include-path-regex": "^/v1/(batch|track|identify|page|screen|group|alias)$",
         "checks": {"negative_data_rejection": {"enabled": False}}}],
}


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[RunningApp]:
    async with running_app(database_url, rate_limit_per_second=10_000.0,
                           rate_limit_burst=10_000) as running:
        yield running


def run_schemathesis(base_url: str, key: str) -> tuple[list[str], set[str]]:
    """Every operation, positive and negative data, every check enabled by default; returns
    the failures (each with the curl command to reproduce) and the operations that answered
    a 2xx at least once (so a key that never got through cannot pass for a clean run)."""
    # The key goes in through schemathesis's own auth, so a negative case that leaves it out
    # (or mangles it) is sent that way, and its 401 is the rejection expected.
    auth = {"openapi": {"bearer": {"bearer": key},
                        "segmentWriteKey": {"username": key, "password": ""}}}
    schema = schemathesis.openapi.from_url(
        f"{base_url}/openapi.json", config=schemathesis.Config.from_dict({**CONFIG, "auth": auth}))
    failures: list[str] = []
    succeeded: set[str] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(operation, mode, base_url, failures, succeeded)
    return failures, succeeded


def fuzz_operation(operation: Any, mode: GenerationMode, base_url: str, failures: list[str],
                   succeeded: set[str]) -> None:
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        try:
            response = case.call_and_validate(base_url=base_url)
        except (AssertionError, BaseExceptionGroup) as exc:  # a FailureGroup
            failures.append(f"{operation.label} [{mode.value}]: {exc}")
        else:
            if 200 <= response.status_code < 300:
                succeeded.add(operation.label)

    try:
        check()
    except Unsatisfiable:  # nothing to make negative (an operation without inputs)
        assert mode is GenerationMode.NEGATIVE, operation.label


async def test_schemathesis_finds_no_contradiction(app: RunningApp) -> None:
    failures, succeeded = await asyncio.to_thread(run_schemathesis, app.base_url,
                                                  app.admin_key)
    assert not failures, "\n\n".join(failures)
    assert {"POST /v1/events", "POST /v1/contacts", "GET /v1/contacts/{contact_id}/events",
            "GET /v1/suppressions", "GET /v1/workflows", "POST /v1/batch"} <= succeeded


# --- hostile payloads at every endpoint --------------------------------------------------------

FIELDS = ["type", "contact_id", "email", "properties", "timestamp", "id", "events", "attributes",
          "timezone", "from", "to", "subject", "text", "html", "raw", "headers", "tags",
          "metadata", "send_at", "idempotency_key", "horizon", "contact_ids", "since",
          "suppressions", "reason", "category", "detail"]
ODD_TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from([
    "", "\u0000", "\u202e\u0301", "a/b", "%2F", "..", "\U0001f600", "\r\nBcc: x@y.example",
    "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "inf", "1e20", "²", "٣",
    "ann@example.org", "service@paypal.com", "From: a@b.example\n\nx", "30d"])
NUMBER_TEXT = st.integers(-(10**40), 10**40).map(str) | st.sampled_from(
    ["1e308", "-0", "1e-400", "1.5", "-9223372036854775809", "18446744073709551616"])
SCALAR_TEXT = (NUMBER_TEXT | ODD_TEXT.map(lambda t: json.dumps(t, ensure_ascii=False))
               | ODD_TEXT.map(json.dumps) | st.sampled_from(
                   ["null", "true", "false", '"\\ud800"', '"\\u0000"']))


def _object(items: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(name)}:{value}" for name, value in items) + "}"


JSON_TEXT = st.recursive(
    SCALAR_TEXT,
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
    | st.lists(st.tuples(st.sampled_from(FIELDS) | ODD_TEXT, inner), max_size=6).map(_object),
    max_leaves=20)
DEEP = st.integers(0, 400).map(lambda n: '{"type":"t","contact_id":"c","properties":'
                               + '{"a":' * n + "1" + "}" * n + "}")
BODIES = (JSON_TEXT | DEEP | st.binary(max_size=64).map(lambda b: b.decode("latin-1"))
          | st.lists(st.tuples(st.sampled_from(FIELDS), SCALAR_TEXT), max_size=8).map(_object))
POSTS = ["/v1/events", "/v1/contacts", "/v1/messages", "/v1/suppressions",
         "/v1/workflows/abandoned-cart/simulate", "/v1/batch", "/v1/track", "/v1/identify"]
GETS = ["/v1/contacts/{}", "/v1/contacts/{}/events", "/v1/contacts/{}/explain",
        "/v1/messages/{}", "/v1/suppressions/{}", "/v1/workflows/{}/simulate",
        "/v1/unsubscribe/{}", "/v1/workflows/{}/stats"]
QUERY_NAMES = ["limit", "cursor", "reason", "format", "key", "type", "anonymous_id",
               "contact_token", "id", "email", "since"]


def throw_hostile_payloads(base_url: str, key: str) -> list[str]:
    """Generated bodies and paths at every endpoint; returns each 5xx answer."""
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as client:

        @settings(max_examples=150, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from(POSTS), body=BODIES,
               content_type=st.sampled_from(["application/json", "text/csv", "text/plain"]))
        def post(path: str, body: str, content_type: str) -> None:
            response = client.post(path, content=body.encode("utf-8", "surrogatepass"),
                                   headers={"Content-Type": content_type})
            if response.status_code >= 500:
                failures.append(f"POST {path} {body[:300]!r}: {response.status_code} "
                                f"{response.text[:200]}")

        @settings(max_examples=150, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(template=st.sampled_from([*GETS, "/v1/pixel.gif"]), segment=ODD_TEXT,
               query=st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | ODD_TEXT,
                                        ODD_TEXT | NUMBER_TEXT), max_size=4))
        def get(template: str, segment: str, query: list[tuple[str, str]]) -> None:
            path = template.format(quote(segment, safe=""))
            response = client.get(path, params=query)
            if response.status_code >= 500:
                failures.append(f"GET {path} {query!r}: {response.status_code} "
                                f"{response.text[:200]}")

        post()
        get()
    return failures


async def test_hostile_payloads_never_get_a_5xx(app: RunningApp) -> None:
    failures = await asyncio.to_thread(throw_hostile_payloads, app.base_url, app.admin_key)
    assert not failures, "\n".join(failures[:20])
