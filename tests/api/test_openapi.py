"""The OpenAPI document describes exactly the routes the application serves."""

from __future__ import annotations

from typing import Any

from hookd.api import ui
from hookd.api.auth import PUBLIC_PATHS
from hookd.models import Status
from tests.api.conftest import Api


async def document(api: Api) -> dict[str, Any]:
    reply = await api.call("GET", "/v1/openapi.json")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    return reply.body  # type: ignore[no-any-return]


async def test_every_route_is_documented_and_every_documented_route_exists(api: Api) -> None:
    doc = await document(api)
    # The dashboard's static files are pages, not API: the document leaves them out.
    served = {
        (route.method, route.resource.canonical)
        for route in api.app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and route.resource.canonical not in ui.PATHS
    }
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    assert doc["openapi"].startswith("3.1")


async def test_operations_document_auth_and_errors(api: Api) -> None:
    doc = await document(api)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        **schemes["ApiKey"],
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
    }
    assert schemes["Bearer"]["scheme"] == "bearer"
    ids = set()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            ids.add(op["operationId"])
            if path in PUBLIC_PATHS:
                assert op["security"] == [], path
                continue
            assert op["security"] == [{"ApiKey": []}, {"Bearer": []}]
            assert {"400", "401", "403", "503"} <= set(op["responses"]), (method, path)
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
            params = [p.get("$ref", "") for p in op["parameters"]]
            assert "#/components/parameters/WorkspaceId" in params
            if "{id}" in path:
                assert "404" in op["responses"]
                assert "#/components/parameters/Id" in params
            if "requestBody" in op:
                assert {"413", "415"} <= set(op["responses"])
    assert len(ids) == sum(len(ops) for ops in doc["paths"].values())


async def test_document_follows_configuration_and_vocabulary(api: Api) -> None:
    doc = await document(api)
    schemas = doc["components"]["schemas"]
    timeout = schemas["WebhookCreate"]["properties"]["timeoutMs"]
    assert timeout["maximum"] == api.config.delivery.max_timeout_ms
    assert schemas["Delivery"]["properties"]["status"]["enum"] == [s.value for s in Status]
    assert set(schemas["DeliveryWithAttempts"]["required"]) == {
        *schemas["Delivery"]["required"],
        "attempts",
    }
