"""Validate hal0's /v1 bodies against OpenAI's published OpenAPI description (../shared/openai)."""

from __future__ import annotations

import functools
from typing import Any

import jsonschema
import yaml

from tests.helpers.env import REPO

SPEC = REPO.parent / "shared" / "openai" / "openapi.yaml"


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
    with SPEC.open() as f:  # about a second with libyaml
        spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return _fix_nullable(spec["components"]["schemas"])  # type: ignore[no-any-return]


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
