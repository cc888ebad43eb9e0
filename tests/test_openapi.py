"""/openapi.json: every registered aiohttp route is described (and nothing else), each with the
access its handler declares; the /v1 shapes agree with OpenAI's published schemas."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jsonschema
import pytest
import schemathesis
from aiohttp import web
from aiohttp.test_utils import TestClient

from hal0.bootstrap import init_tree
from hal0.config import load_config, load_slots
from hal0.paths import Paths
from hal0.server.access import declared_access, public
from hal0.server.app import build_app
from hal0.server.openapi import document
from hal0.server.openapi_routes import OPERATIONS, Op
from hal0.server.openapi_schemas import COMPONENTS
from tests.helpers.openapi import _components as openai_components


@pytest.fixture
def app(paths: Paths) -> web.Application:
    init_tree(paths)
    return build_app(paths, load_config(paths), load_slots(paths))


def _resource(app: web.Application, path: str, method: str) -> web.AbstractResource | None:
    """The resource the router would pick for ``method path`` (the first that matches both)."""
    for res in app.router.resources():
        info = res.get_info()
        matches = info["pattern"].fullmatch(path) if "pattern" in info else info.get("path") == path
        if matches and any(r.method == method for r in res):
            return res
    return None


def problems(app: web.Application, ops: tuple[Op, ...]) -> list[str]:
    """What keeps the description from being true for ``app``'s router: a route without an ``Op``,
    an ``Op`` without a route, an ``Op`` whose scope is not what its handler declares."""
    found: dict[tuple[str, web.AbstractResource], Op] = {}
    out = []
    for op in ops:
        res = _resource(app, op.example_path(), op.method)
        if res is None:
            out.append(f"{op.method} {op.path} is described but not served")
            continue
        found[(op.method, res)] = op
        handler = next(r.handler for r in res if r.method == op.method)
        declared = declared_access(handler, op.example_path())
        if declared != op.scope:
            out.append(f"{op.method} {op.path}: its handler declares {declared!r}, the description {op.scope!r}")
    for route in app.router.routes():
        if route.method == "HEAD" and any(r.method == "GET" for r in route.resource or ()):
            continue  # aiohttp serves HEAD beside each GET
        assert route.resource is not None
        if (route.method, route.resource) not in found:
            out.append(f"{route.method} {route.resource.canonical} is served but not described "
                       "(add an Op to hal0/server/openapi_routes.py)")
    return out


def test_every_route_is_described_and_every_description_served(app: web.Application) -> None:
    assert problems(app, OPERATIONS) == []


async def _extra(request: web.Request) -> web.Response:
    return web.Response()


def test_a_route_added_without_a_description_is_found(app: web.Application) -> None:
    app.router.add_get("/api/new-thing/{id}", _extra)
    app.router.add_post("/api/status", public(_extra))
    assert problems(app, OPERATIONS) == [
        "GET /api/new-thing/{id} is served but not described (add an Op to hal0/server/openapi_routes.py)",
        "POST /api/status is served but not described (add an Op to hal0/server/openapi_routes.py)"]


def test_a_description_without_a_route_or_with_another_scope_is_found(app: web.Application) -> None:
    gone = Op("GET", "/api/gone", "admin", "nothing", "hal0")
    slots = next(op for op in OPERATIONS if op.path == "/api/slots" and op.method == "GET")
    wrong = dataclasses.replace(slots, scope="inference")
    ops = (*(op for op in OPERATIONS if op is not slots), gone, wrong)
    assert problems(app, ops) == ["GET /api/gone is described but not served",
                                  "GET /api/slots: its handler declares 'admin', the description 'inference'"]


async def test_served_description_is_openapi_3_1_with_the_envelope(app: web.Application, aiohttp_client: Any) -> None:
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    resp = await client.get("/openapi.json")  # public: no token
    assert resp.status == 200
    doc = await resp.json()
    assert doc == json.loads(json.dumps(document()))
    assert doc["openapi"] == "3.1.0"
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    slots = doc["paths"]["/api/slots/{name}"]["delete"]
    assert slots["x-hal0-scope"] == "admin" and slots["security"] == [{"bearer": ["admin"]}, {"apiKey": ["admin"]}]
    assert slots["responses"]["403"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert "/api/tags" in doc["paths"] and "/v1/messages" in doc["paths"] and "/models" in doc["paths"]
    # the error envelope's schema is what hal0 answers
    bad = await client.get("/api/slots")
    jsonschema.Draft202012Validator({**COMPONENTS["Error"], "$defs": {}}).validate(await bad.json())
    assert bad.status == 401
    schemathesis.openapi.from_dict(doc)  # loads as an OpenAPI document


def test_every_schema_is_valid_json_schema() -> None:
    for schema in COMPONENTS.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for item in document()["paths"].values():
        for op in item.values():
            for resp in op["responses"].values():
                for content in resp.get("content", {}).values():
                    jsonschema.Draft202012Validator.check_schema(content["schema"])


def _required_in(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> list[str]:
    """Where ``ours`` requires a field OpenAI's schema does not, or gives a property another type."""
    comps = openai_components()

    def deref(s: dict[str, Any], pool: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in s:
            s = pool[s["$ref"].rsplit("/", 1)[1]]
        return s
    ours, theirs = deref(ours, COMPONENTS), deref(theirs, comps)
    out = [f"{where}.{k} is required here, not by OpenAI" for k in ours.get("required", ())
           if k not in theirs.get("required", ())]
    for key, sub in ours.get("properties", {}).items():
        other = theirs.get("properties", {}).get(key)
        if other is None:
            continue  # a field hal0 adds (capabilities, ...)
        sub, other = deref(sub, COMPONENTS), deref(other, comps)
        if sub.get("type") == "object":
            out += _required_in(sub, other, f"{where}.{key}")
        elif sub.get("type") == "array" and isinstance(other.get("items"), dict):
            out += _required_in(sub["items"], other["items"], f"{where}.{key}[]")
        elif isinstance(sub.get("type"), str) and isinstance(other.get("type"), str) and sub["type"] != other["type"]:
            out.append(f"{where}.{key} is {sub['type']} here, {other['type']} in OpenAI's schema")
    return out


def test_openai_shapes_agree_with_openais_schemas() -> None:
    """Each /v1 answer hal0 passes through is described by a subset of OpenAI's published schema
    (tests/fixtures/openai): nothing required that OpenAI does not require, no other types."""
    checked = 0
    for op in OPERATIONS:
        if op.openai:
            assert _required_in(op.response, {"$ref": f"#/components/schemas/{op.openai}"}, op.openai) == []
            checked += 1
    assert checked >= 6


def test_the_agreement_check_can_fail() -> None:
    ours = {"type": "object", "required": ["id", "colour"], "properties": {"created": {"type": "string"}}}
    assert _required_in(ours, {"$ref": "#/components/schemas/Model"}, "Model") == [
        "Model.colour is required here, not by OpenAI", "Model.created is string here, integer in OpenAI's schema"]
