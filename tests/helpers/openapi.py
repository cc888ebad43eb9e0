"""Validate hal0's /v1 bodies against OpenAI's published OpenAPI description.

The schemas hal0's tests use, and everything they reference, are kept in
``tests/fixtures/openai/schemas.json`` (OpenAI's MIT-licensed text, unchanged), so a plain clone
runs the same checks. ``schemas_from_spec()`` re-derives them from the full description
(``../shared/openai/openapi.yaml``), and a test keeps the copy equal to it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

from tests.helpers.env import REPO

SPEC = REPO.parent / "shared" / "openai" / "openapi.yaml"
SCHEMAS = REPO / "tests" / "fixtures" / "openai" / "schemas.json"
USED = ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse", "CreateCompletionResponse",
        "CreateEmbeddingResponse", "ImagesResponse", "ListModelsResponse", "Model", "Error")


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = set()
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/components/schemas/"):
                found.add(v.rsplit("/", 1)[1])
            else:
                found |= _refs(v)
        return found
    if isinstance(node, list):
        return set().union(*map(_refs, node)) if node else set()
    return set()


def schemas_from_spec(spec: Path = SPEC) -> dict[str, Any]:
    """``USED`` and every schema they reference, from the full OpenAPI description."""
    import yaml

    with spec.open() as f:  # about a second with libyaml
        schemas = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["components"]["schemas"]
    need: set[str] = set()
    todo = list(USED)
    while todo:
        name = todo.pop()
        if name not in need:
            need.add(name)
            todo.extend(_refs(schemas[name]))
    return {name: schemas[name] for name in sorted(need)}


def _fix_nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` (left in this 3.1 file) as JSON Schema's ``type: [T, "null"]``."""
    if isinstance(node, dict):
        node = {k: _fix_nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            if isinstance(node.get("enum"), list) and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
            if isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
            elif "type" not in node:
                node = {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_fix_nullable(v) for v in node]
    return node


@functools.cache
def _components() -> dict[str, Any]:
    return _fix_nullable(json.loads(Path(SCHEMAS).read_text()))  # type: ignore[no-any-return]


def validate(name: str, instance: Any) -> None:
    """Raise jsonschema.ValidationError unless ``instance`` fits components.schemas[name]."""
    schemas = _components()
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
    jsonschema.Draft202012Validator(root).validate(instance)


def llama_chat_quirks(body: dict[str, Any]) -> dict[str, Any]:
    """Fill the two fields llama-server omits though the schema requires them (both nullable)."""
    for choice in body.get("choices", []):
        choice.setdefault("logprobs", None)
        choice.get("message", {}).setdefault("refusal", None)
    return body
