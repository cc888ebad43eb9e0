"""JSON Schemas of hal0's request and response bodies, as data (``hal0.server.openapi_routes``
uses them; ``components.schemas`` of ``/openapi.json`` holds the named ones).

The ``/v1`` shapes are the subset of OpenAI's published schemas that hal0 relies on (the same
names; a test checks each required field here is required there too). Bodies hal0 only passes
through to a backend stay open (``additionalProperties`` is allowed everywhere).
"""

from __future__ import annotations

from typing import Any

__all__ = ["COMPONENTS", "Schema", "arr", "obj", "ref"]

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY: Schema = {}


def obj(required: tuple[str, ...] = (), **props: Schema) -> Schema:
    """An object with ``props`` (``required`` among them); other keys are allowed."""
    out: Schema = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


def arr(items: Schema, min_items: int = 0) -> Schema:
    out: Schema = {"type": "array", "items": items}
    if min_items:
        out["minItems"] = min_items
    return out


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_MESSAGE = obj(("role",), role={"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
               content={"anyOf": [STR, arr(obj()), {"type": "null"}]}, name=STR)
_USAGE = obj(("prompt_tokens", "completion_tokens", "total_tokens"),
             prompt_tokens=INT, completion_tokens=INT, total_tokens=INT)
_TOKENS = {"type": "integer", "minimum": 1, "maximum": 4096}

COMPONENTS: dict[str, Schema] = {
    # hal0's error envelope (hal0.errors.envelope) and the two other dialects' shapes
    "Error": obj(("error",), error=obj(
        ("message", "type", "code", "param", "details"), message=STR, type=STR,
        code={"type": "string", "description": "stable dotted code, e.g. slot.not_ready"},
        param=nullable(STR), details={"type": "object"})),
    "AnthropicError": obj(("type", "error"), type={"const": "error"},
                          error=obj(("type", "message"), type=STR, message=STR, code=STR, details={"type": "object"})),
    "OllamaError": obj(("error",), error=STR),
    # --- OpenAI (subset of openai/openai-openapi's components of the same names) ---
    "Model": obj(("id", "object", "created", "owned_by"), id=STR, object={"const": "model"}, created=INT,
                 owned_by=STR, capabilities=arr(STR)),
    "ListModelsResponse": obj(("object", "data"), object={"const": "list"}, data=arr(ref("Model"))),
    "CreateChatCompletionRequest": obj(
        ("messages",), model=STR, messages=arr(_MESSAGE, 1), stream=BOOL, max_tokens=_TOKENS,
        max_completion_tokens=_TOKENS, temperature={"type": "number", "minimum": 0, "maximum": 2},
        n={"type": "integer", "minimum": 1, "maximum": 1}, stop={"anyOf": [STR, arr(STR)]}, seed=INT),
    "CreateChatCompletionResponse": obj(
        ("id", "object", "created", "model", "choices"), id=STR, object={"const": "chat.completion"},
        created=INT, model=STR, usage=_USAGE,
        choices=arr(obj(("index", "message", "finish_reason"), index=INT, finish_reason=nullable(STR),
                        message=obj(("role",), role=STR, content=nullable(STR))))),
    "CreateCompletionRequest": obj(
        ("prompt",), model=STR, prompt={"anyOf": [STR, arr(STR, 1)]}, suffix=nullable(STR), stream=BOOL,
        max_tokens=_TOKENS, temperature={"type": "number", "minimum": 0, "maximum": 2}, seed=INT),
    "CreateCompletionResponse": obj(
        ("id", "object", "created", "model", "choices"), id=STR, object={"const": "text_completion"},
        created=INT, model=STR, usage=_USAGE,
        choices=arr(obj(("index", "text", "finish_reason"), index=INT, text=STR, finish_reason=nullable(STR)))),
    "CreateEmbeddingRequest": obj(("input",), model=STR, input={"anyOf": [STR, arr(STR, 1)]},
                                  encoding_format={"enum": ["float", "base64"]}),
    "CreateEmbeddingResponse": obj(
        ("object", "data", "model", "usage"), object={"const": "list"}, model=STR,
        usage=obj(("prompt_tokens", "total_tokens"), prompt_tokens=INT, total_tokens=INT),
        data=arr(obj(("index", "embedding", "object"), index=INT, object={"const": "embedding"},
                     embedding={"anyOf": [arr(NUM), STR]}))),
    "CreateImageRequest": obj(("prompt",), model=STR, prompt=STR, n={"type": "integer", "minimum": 1},
                              size=STR, response_format={"enum": ["url", "b64_json"]}),
    "ImagesResponse": obj(("created",), created=INT, data=arr(obj(url=STR, b64_json=STR))),
    "CreateSpeechRequest": obj(("input",), model=STR, input=STR, voice=STR, response_format=STR, speed=NUM),
    "CreateTranscriptionRequest": obj(
        ("file",), file={"type": "string", "contentMediaType": "application/octet-stream"}, model=STR, language=STR,
        response_format=STR),
    "RerankRequest": obj(("query", "documents"), model=STR, query=STR, documents=arr(STR, 1), top_n=INT),
    "RerankResponse": obj(("results",), model=STR,
                          results=arr(obj(("index", "relevance_score"), index=INT, relevance_score=NUM))),
    "CreateResponse": obj(("input",), model=STR, input={"anyOf": [STR, arr(obj())]}, instructions=STR,
                          previous_response_id=STR, stream=BOOL, store=BOOL, max_output_tokens=_TOKENS),
    "Response": obj(("id", "object", "status"), id=STR, object={"const": "response"}, status=STR, model=STR,
                    output=arr(obj())),
    "InfillRequest": obj(model=STR, input_prefix=STR, input_suffix=STR, n_predict=_TOKENS),
    # --- Anthropic ---
    "AnthropicMessagesRequest": obj(
        ("messages",), model=STR, max_tokens=_TOKENS, stream=BOOL, system={"anyOf": [STR, arr(obj())]},
        messages=arr(obj(("role", "content"), role={"enum": ["user", "assistant"]},
                         content={"anyOf": [STR, arr(obj())]}), 1)),
    "AnthropicMessage": obj(("id", "type", "role", "content"), id=STR, type={"const": "message"}, role=STR,
                            content=arr(obj()), stop_reason=nullable(STR), usage=obj()),
    # --- Ollama ---
    "OllamaChatRequest": obj(("model",), model=STR, messages=arr(obj(("role",), role=STR, content=STR)),
                             stream=BOOL, keep_alive={"anyOf": [STR, NUM]}, options=obj(), format=ANY),
    "OllamaGenerateRequest": obj(("model",), model=STR, prompt=STR, suffix=STR, images=arr(STR), stream=BOOL,
                                 keep_alive={"anyOf": [STR, NUM]}, options=obj()),
    "OllamaEmbedRequest": obj(("model",), model=STR, input={"anyOf": [STR, arr(STR)]}, prompt=STR,
                              keep_alive={"anyOf": [STR, NUM]}),
    "OllamaModelName": obj(model=STR, name=STR),
    "OllamaModelList": obj(("models",), models=arr(obj(("name", "model", "size", "digest"), name=STR, model=STR,
                                                        size=INT, digest=STR, modified_at=STR, details=obj()))),
    # --- hal0's own ---
    "Slot": obj(("name", "state"), name=STR, state=STR, kind=STR, provider=STR, model=nullable(STR),
                builtin=BOOL, model_default=nullable(STR)),
    "SlotCreate": obj(("name",), name={"type": "string", "pattern": "^[a-z][a-z0-9-]{0,31}$"}, kind=STR,
                      provider=STR, model=STR, backend=STR, port=INT, enabled=BOOL),
    "SlotModel": obj(model={"type": "string", "minLength": 1}, force=BOOL),
    "RegistryModel": obj(("id",), id=STR, path=STR, capabilities=arr(STR), size=INT, source=STR),
    "RegisterModel": obj(("id", "path"), id=STR, path={"type": "string", "pattern": "^/"},
                         capabilities=arr(STR), allow_outside_roots=BOOL, source=STR),
    "PullRequest": obj(("ref",), ref={"type": "string", "minLength": 1}, sha256=STR, **{"as": STR}),
    "Pull": obj(("id",), id=STR, model_id=STR, state=STR, done=INT, total=nullable(INT)),
    "Capabilities": obj(("cards",), cards={"type": "object", "additionalProperties": obj(),
                                           "description": "card name -> its children"}),
    "CapabilityChange": obj(enabled=BOOL, model=STR, backend=STR),
    "RouterModel": obj(("model",), model={"type": "string", "minLength": 1}),
}
