"""Fuzz the running API from its own OpenAPI document with schemathesis.

Two workspaces (A, B) each get a workspace key and seeded objects (webhooks,
events, deliveries, a test delivery); a platform key acts for either through
X-Workspace-Id.  Every operation is driven with schema-valid (positive) and
schema-violating (negative) input, as a random one of the three callers, and
often with the path id swapped for one of the caller's own objects or one of
the *other* workspace's.  Every answer must:

* not be a 5xx;
* match the document (status code, content type, headers, body schema);
* be a 4xx whenever the input violates the document (negative mode);
* never mention an id of the other workspace; and when the path names the
  other workspace's object, be a 4xx that is not a 409 (404, or a 400 for a
  bad body, which is decided before any lookup), exactly as for a missing one.

Bounded: FUZZ_EXAMPLES examples per operation and mode, derandomized so a CI
run is reproducible.  The schemathesis run is synchronous (requests), so it
runs in a worker thread while the server keeps serving on the test's loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hookd.models import Status
from tests.api.conftest import Api
from tests.conftest import eventually

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
CREDENTIAL_HEADERS = ("X-Api-Key", "Authorization")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@dataclass
class Tenant:
    workspace: str
    key: str
    webhook_ids: list[str]
    delivery_ids: list[str]
    event_ids: list[str]

    @property
    def ids(self) -> list[str]:
        return self.webhook_ids + self.delivery_ids + self.event_ids

    def pool(self, path: str) -> list[str]:
        if path.startswith("/v1/events"):
            return self.event_ids
        return self.delivery_ids if path.startswith("/v1/deliveries") else self.webhook_ids


async def _seed(api: Api, workspace: str, platform_key: str) -> Tenant:
    key = await api.key(workspace, owner=f"user_{workspace}")
    hooks = [
        await api.webhook(key, name=f"{workspace} hook {n}", events=["email.*"]) for n in range(2)
    ]
    delivery_ids: list[str] = []
    event_ids: list[str] = []
    for n in range(3):
        reply = await api.call(
            "POST",
            "/v1/events",
            key=key,
            json_body={"type": "email.replied", "data": {"n": n}, "idempotencyKey": f"k{n}"},
        )
        assert reply.status == 202
        event_ids.append(reply.body["data"]["_id"])
        delivery_ids += reply.body["data"]["deliveryIds"]
    reply = await api.call("POST", f"/v1/webhooks/{hooks[0]['_id']}/test", key=key)
    assert reply.status == 200
    delivery_ids.append(reply.body["data"]["deliveryId"])
    # The example URLs are refused before any connection: all end as dead letters.

    async def settled() -> bool:
        for delivery_id in delivery_ids:
            d = await api.store.get_delivery(workspace, delivery_id)
            if d is not None and d.status is not Status.DEAD_LETTER:
                return False
        return True

    await eventually(settled)
    return Tenant(workspace, key, [h["_id"] for h in hooks], delivery_ids, event_ids)


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    base_url: str,
    tenants: dict[str, Tenant],
    platform_key: str,
    failures: list[str],
) -> None:
    strategy = operation.as_strategy(generation_mode=mode)
    has_id = any(p.name == "id" and p.location == "path" for p in operation.path_parameters)

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy)
        me, other = data.draw(st.sampled_from([("A", "B"), ("B", "A")]))
        caller = tenants[me]
        headers = {"X-Api-Key": caller.key}
        # Setting X-Workspace-Id could overwrite a header the negative mode broke on purpose.
        if mode is GenerationMode.POSITIVE:
            if data.draw(st.booleans()):
                headers = {"X-Api-Key": platform_key, "X-Workspace-Id": caller.workspace}
            elif data.draw(st.booleans()):
                headers["X-Workspace-Id"] = caller.workspace
        target = "generated"
        if has_id and mode is GenerationMode.POSITIVE:
            # Weighted towards real ids: a random id only ever meets a 404.
            target = data.draw(st.sampled_from(["generated", "own", "own", "other", "other"]))
            if target != "generated":
                pool = tenants[me if target == "own" else other].pool(operation.path)
                case.path_parameters = {
                    **case.path_parameters,
                    "id": data.draw(st.sampled_from(pool)),
                }
        # Credentials come from us only; schemathesis' made-up ones would clash (401).
        for name in CREDENTIAL_HEADERS:
            (case.headers or {}).pop(name, None)
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)
        text = response.text
        leaked = [i for i in tenants[other].ids if i in text]
        assert not leaked, f"{operation.label} as {me} shows {other}'s ids {leaked}: {text[:300]}"
        if target == "other":
            code = response.status_code
            assert 400 <= code < 500 and code != 409, (
                f"{operation.label} as {me} on {other}'s object answered {code}: {text[:300]}"
            )

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is the latter
        failures.append(f"{operation.label} [{mode.value}]: {exc}")


def _fuzz_all(
    base_url: str, tenants: dict[str, Tenant], platform_key: str
) -> tuple[list[str], list[str]]:
    schema = schemathesis.openapi.from_url(f"{base_url}/v1/openapi.json")
    failures: list[str] = []
    labels: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    # Deletions last, so the other operations still find the seeded webhooks.
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    for operation in operations:
        labels.append(operation.label)
        modes = [GenerationMode.POSITIVE]
        # The public probes take no input at all: there is nothing to negate.
        if list(operation.iter_parameters()) or len(operation.body):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            _fuzz_operation(operation, mode, base_url, tenants, platform_key, failures)
    return labels, failures


@pytest.mark.timeout(600)
async def test_fuzz_from_the_openapi_document(api: Api) -> None:
    platform_key = await api.key(None, owner="user_platform")
    tenants = {
        "A": await _seed(api, "ws_fuzz_a", platform_key),
        "B": await _seed(api, "ws_fuzz_b", platform_key),
    }
    fuzz: Callable[[], tuple[list[str], list[str]]] = lambda: _fuzz_all(  # noqa: E731
        api.base_url, tenants, platform_key
    )
    labels, failures = await asyncio.to_thread(fuzz)
    assert len(labels) == 18, labels
    assert not failures, "\n\n".join(failures)
