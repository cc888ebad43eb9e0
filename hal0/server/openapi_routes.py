"""Every route hal0 serves, described as data: ``/openapi.json`` is built from ``OPERATIONS``.

To describe a new route, add an ``Op`` to the section it belongs to: its method and OpenAPI path
(``{name}`` for a path parameter, with an ``example`` the tests call it with), the access its
handler declares (``scope``, the same word as its ``hal0.server.access`` decorator), the body
schemas (named ones in ``openapi_schemas.COMPONENTS``) and the statuses it answers besides the
success. tests/test_openapi.py fails while a registered route has no ``Op`` (and the other way
round), or when an ``Op``'s scope differs from what its handler declares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hal0.server.access import Access
from hal0.server.openapi_schemas import BOOL, INT, STR, Schema, arr, obj, ref

__all__ = ["OPERATIONS", "Op", "Param"]

ErrorShape = Literal["hal0", "anthropic", "ollama"]


@dataclass(frozen=True)
class Param:
    """A path or query parameter; ``example`` is what the tests call the route with."""

    name: str
    where: Literal["path", "query"] = "path"
    schema: Schema = field(default_factory=lambda: dict(STR))
    example: str = ""
    description: str = ""


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    scope: Access
    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    request: Schema | None = None          # the body's schema; None: no body
    request_type: str = "application/json"
    request_required: bool = True
    response: Schema = field(default_factory=dict)
    response_type: str = "application/json"
    status: int = 200
    errors: tuple[int, ...] = (400,)       # besides 401/403 (from scope) and 500
    error_shape: ErrorShape = "hal0"
    upstream: bool = False                 # may answer 502/503/504 for a backend or upstream problem
    openai: str | None = None              # the OpenAI schema the success body follows

    @property
    def operation_id(self) -> str:
        words = [w.strip("{}").replace("-", "_").replace(".", "_") for w in self.path.split("/") if w]
        return "_".join([self.method.lower(), *words]) or self.method.lower()

    def example_path(self) -> str:
        path = self.path
        for p in self.params:
            if p.where == "path":
                path = path.replace("{" + p.name + "}", p.example)
        return path


SLOT = Param("name", example="no-such-slot", description="the slot's name")
_SSE = "text/event-stream"
_NDJSON = "application/x-ndjson"
_CHAT = ("chat", "/v1/chat/completions")
_INF = (400, 404, 409, 413, 429)

_OPENAI: tuple[Op, ...] = (
    Op("GET", "/v1/models", "public", "Every slot and model hal0 can serve", "openai",
       params=(Param("capability", "query", example="chat"),), response=ref("ListModelsResponse"),
       errors=(), openai="ListModelsResponse"),
    Op("GET", "/v1/models/{id}", "inference", "One model of /v1/models", "openai",
       params=(Param("id", example="no-such-model"),), response=ref("Model"), errors=(404,), openai="Model"),
    Op("POST", "/v1/chat/completions", "inference", "Chat (streams as server-sent events with stream)", "openai",
       request=ref("CreateChatCompletionRequest"), response=ref("CreateChatCompletionResponse"),
       errors=_INF, upstream=True, openai="CreateChatCompletionResponse"),
    Op("POST", "/v1/completions", "inference", "Text completion; with suffix, fill-in-the-middle", "openai",
       request=ref("CreateCompletionRequest"), response=ref("CreateCompletionResponse"), errors=_INF,
       upstream=True, openai="CreateCompletionResponse"),
    Op("POST", "/v1/embeddings", "inference", "Embeddings", "openai", request=ref("CreateEmbeddingRequest"),
       response=ref("CreateEmbeddingResponse"), errors=_INF, upstream=True, openai="CreateEmbeddingResponse"),
    Op("POST", "/v1/rerankings", "inference", "Rerank documents against a query", "openai",
       request=ref("RerankRequest"), response=ref("RerankResponse"), errors=_INF, upstream=True),
    Op("POST", "/v1/rerank", "inference", "Alias of /v1/rerankings", "openai",
       request=ref("RerankRequest"), response=ref("RerankResponse"), errors=_INF, upstream=True),
    Op("POST", "/v1/audio/speech", "inference", "Text to speech (audio bytes)", "openai",
       request=ref("CreateSpeechRequest"), response={"type": "string"}, response_type="audio/*",
       errors=_INF, upstream=True),
    Op("POST", "/v1/audio/transcriptions", "inference", "Speech to text (multipart upload)", "openai",
       request=ref("CreateTranscriptionRequest"), request_type="multipart/form-data",
       response=obj(("text",), text=STR), errors=_INF, upstream=True),
    Op("GET", "/v1/audio/voices", "public", "The voices of the tts slot (or the slot ?model= names)", "openai",
       params=(Param("model", "query", example="tts"),),
       response=obj(voices=arr(obj(id=STR, name=STR)), data=arr(obj())), errors=(404,), upstream=True),
    Op("GET", "/v1/audio/models", "public", "The speech slots and models", "openai",
       response=obj(("object", "data", "models"), object={"const": "list"}, data=arr(ref("Model")),
                    models=arr(obj(id=STR, name=STR))), errors=()),
    Op("POST", "/v1/images/generations", "inference", "Image generation through the img slot (ComfyUI)", "openai",
       request=ref("CreateImageRequest"), response=ref("ImagesResponse"), errors=_INF, upstream=True,
       openai="ImagesResponse"),
    Op("GET", "/v1/images/files/{name}", "public", "An image of an earlier response_format=url answer "
       "(its unguessable name is the key)", "openai", params=(Param("name", example="no-such-image.png"),),
       response={"type": "string"}, response_type="image/png", errors=(404,)),
    Op("POST", "/v1/responses", "inference", "OpenAI Responses (stored per token)", "responses",
       request=ref("CreateResponse"), response=ref("Response"), errors=_INF, upstream=True),
    Op("GET", "/v1/responses/{id}", "inference", "A stored response of this token", "responses",
       params=(Param("id", example="resp_nosuch"),), response=ref("Response"), errors=(404,)),
    Op("DELETE", "/v1/responses/{id}", "inference", "Delete a stored response of this token", "responses",
       params=(Param("id", example="resp_nosuch"),),
       response=obj(("id", "object", "deleted"), id=STR, object={"const": "response.deleted"}, deleted=BOOL),
       errors=(404,)),
)

_ANTHROPIC: tuple[Op, ...] = (
    Op("POST", "/v1/messages", "inference", "Anthropic Messages (x-api-key is a hal0 token)", "anthropic",
       request=ref("AnthropicMessagesRequest"), response=ref("AnthropicMessage"), errors=_INF,
       error_shape="anthropic", upstream=True),
    Op("POST", "/v1/messages/count_tokens", "inference", "Count a Messages request's input tokens", "anthropic",
       request=ref("AnthropicMessagesRequest"), response=obj(("input_tokens",), input_tokens=INT), errors=_INF,
       error_shape="anthropic", upstream=True),
)

_LLAMA: tuple[Op, ...] = (
    Op("POST", "/infill", "inference", "llama.cpp's fill-in-the-middle, to the chat slot", "llama.cpp",
       request=ref("InfillRequest"), response=obj(), errors=_INF, upstream=True),
    Op("GET", "/models", "inference", "llama.cpp's router model list: one entry per slot", "llama.cpp",
       params=(Param("capability", "query", example="chat"),),
       response=obj(("object", "data"), object={"const": "list"}, data=arr(obj(("id", "status"), id=STR,
                                                                               status=obj(("value",), value=STR))))),
    Op("POST", "/models/load", "admin", "Load a slot (or the slot of a model's kind) and wait", "llama.cpp",
       request=ref("RouterModel"), response=obj(("success",), success=BOOL), errors=(400, 404, 409, 503),
       upstream=True),
    Op("POST", "/models/unload", "admin", "Unload a slot", "llama.cpp", request=ref("RouterModel"),
       response=obj(("success",), success=BOOL), errors=(400, 404, 409)),
    Op("GET", "/models/sse", "inference", "Each slot's status changes as server-sent events", "llama.cpp",
       response={"type": "string"}, response_type=_SSE, errors=()),
)

_OLLAMA: tuple[Op, ...] = (
    Op("POST", "/api/chat", "inference", "Ollama chat (NDJSON stream unless stream is false)", "ollama",
       request=ref("OllamaChatRequest"), response=obj(("model", "done"), model=STR, done=BOOL),
       errors=_INF, error_shape="ollama", upstream=True),
    Op("POST", "/api/generate", "inference", "Ollama generate", "ollama", request=ref("OllamaGenerateRequest"),
       response=obj(("model", "done"), model=STR, done=BOOL), errors=_INF, error_shape="ollama", upstream=True),
    Op("POST", "/api/embed", "inference", "Ollama embed", "ollama", request=ref("OllamaEmbedRequest"),
       response=obj(("embeddings",), embeddings=arr(arr({"type": "number"}))), errors=_INF,
       error_shape="ollama", upstream=True),
    Op("POST", "/api/embeddings", "inference", "Ollama's older embeddings route", "ollama",
       request=ref("OllamaEmbedRequest"), response=obj(("embedding",), embedding=arr({"type": "number"})),
       errors=_INF, error_shape="ollama", upstream=True),
    Op("GET", "/api/tags", "inference", "Slots and registry models, as Ollama lists them", "ollama",
       response=ref("OllamaModelList"), errors=(), error_shape="ollama"),
    Op("GET", "/api/ps", "inference", "What runs now", "ollama", response=ref("OllamaModelList"), errors=(),
       error_shape="ollama"),
    Op("POST", "/api/show", "inference", "A model's details", "ollama", request=ref("OllamaModelName"),
       response=obj(("details", "capabilities"), details=obj(), capabilities=arr(STR)), errors=(400, 404),
       error_shape="ollama"),
    Op("GET", "/api/version", "public", "The Ollama API level hal0 follows", "ollama",
       response=obj(("version",), version=STR, hal0=STR), errors=(), error_shape="ollama"),
    Op("POST", "/api/pull", "admin", "Pull a model through hal0's pulls (NDJSON progress)", "ollama",
       request=ref("OllamaModelName"), response=obj(("status",), status=STR), errors=(400, 404, 409),
       error_shape="ollama", upstream=True),
    Op("DELETE", "/api/delete", "admin", "Remove a registry model and its pulled files", "ollama",
       request=ref("OllamaModelName"), response={}, errors=(400, 404, 409), error_shape="ollama"),
)

_ACTIONS = {"load": "Load the slot's model (or ``model``) and wait until it is ready",
            "unload": "Unload the slot", "restart": "Restart the slot's backend",
            "swap": "Swap the slot to ``model`` and wait", "enable": "Enable the slot", "disable": "Disable the slot"}

_HAL0: tuple[Op, ...] = (
    Op("GET", "/health", "public", "Liveness", "hal0", response=obj(("status", "version"), status={"const": "ok"},
                                                                 version=STR), errors=()),
    Op("GET", "/openapi.json", "public", "This description", "hal0", response=obj(("openapi",), openapi=STR),
       errors=()),
    Op("GET", "/api/status", "admin", "Version, uptime, paths, slots, capabilities", "hal0",
       response=obj(("version", "slots"), version=STR, uptime_s={"type": "number"}, slots=arr(ref("Slot"))),
       errors=()),
    Op("GET", "/api/events", "admin", "Every event (slot states, pulls...) as server-sent events", "hal0",
       response={"type": "string"}, response_type=_SSE, errors=()),
    Op("GET", "/api/slots", "admin", "The slots", "slots", response=obj(("slots",), slots=arr(ref("Slot"))),
       errors=()),
    Op("POST", "/api/slots", "admin", "Create a slot", "slots", request=ref("SlotCreate"), response=ref("Slot"),
       status=201, errors=(400, 409)),
    Op("GET", "/api/slots/{name}", "admin", "One slot with the tail of its log", "slots", params=(SLOT,),
       response=ref("Slot"), errors=(404,)),
    Op("DELETE", "/api/slots/{name}", "admin", "Delete a slot (not a built-in one)", "slots", params=(SLOT,),
       response=obj(("deleted",), deleted=STR), errors=(400, 404, 409)),
    *(Op("POST", f"/api/slots/{{name}}/{action}", "admin", summary, "slots", params=(SLOT,),
         request=ref("SlotModel"), request_required=action == "swap", response=ref("Slot"),
         errors=(400, 404, 409, 507), upstream=True) for action, summary in _ACTIONS.items()),
    Op("GET", "/api/slots/{name}/logs", "admin", "The last lines of a slot's log; with follow=1, then SSE", "slots",
       params=(SLOT, Param("lines", "query", {"type": "integer", "minimum": 0}, "20"),
               Param("follow", "query", {"enum": ["0", "1", "true"]}, "0")),
       response=obj(("slot", "lines"), slot=STR, lines=arr(STR)), errors=(400, 404)),
    Op("GET", "/api/models", "admin", "The registry", "models", response=obj(("models",),
                                                                            models=arr(ref("RegistryModel"))),
       errors=()),
    Op("POST", "/api/models", "admin", "Register a file on disk", "models", request=ref("RegisterModel"),
       response=ref("RegistryModel"), status=201, errors=(400, 404, 409)),
    Op("POST", "/api/models/pull", "admin", "Start a pull (202 at once; progress on /api/events)", "models",
       request=ref("PullRequest"), response=ref("Pull"), status=202, errors=(400, 404, 409)),
    Op("GET", "/api/models/pulls", "admin", "The pulls", "models", response=obj(("pulls",), pulls=arr(ref("Pull"))),
       errors=()),
    Op("GET", "/api/models/pulls/{id}", "admin", "One pull", "models", params=(Param("id", example="nosuchpull"),),
       response=ref("Pull"), errors=(404,)),
    Op("DELETE", "/api/models/pulls/{id}", "admin", "Cancel a pull (its partial files stay)", "models",
       params=(Param("id", example="nosuchpull"),), response=ref("Pull"), errors=(404,)),
    Op("GET", "/api/models/{id}", "admin", "One registry model with its GGUF header", "models",
       params=(Param("id", example="no-such-model"),), response=ref("RegistryModel"), errors=(404,)),
    Op("DELETE", "/api/models/{id}", "admin", "Remove a registry model and its pulled files", "models",
       params=(Param("id", example="no-such-model"),), response=obj(("removed",), removed=STR, path=STR),
       errors=(404, 409)),
    Op("GET", "/api/capabilities", "admin", "The capability cards", "capabilities",
       response=ref("Capabilities"), errors=()),
    Op("POST", "/api/capabilities/{card}/{child}", "admin", "Change one child of a card (all or none)",
       "capabilities", params=(Param("card", example="no-such-card"), Param("child", example="no-such-child")),
       request=ref("CapabilityChange"), response=obj(), errors=(400, 404, 409)),
    Op("GET", "/api/catalog", "admin", "The curated catalogue, with what fits this box", "models",
       params=(Param("fits", "query", {"enum": ["0", "1", "true"]}, "1"),),
       response=obj(("models",), memory_bytes={"anyOf": [INT, {"type": "null"}]}, models=arr(obj())), errors=()),
    Op("GET", "/api/hardware", "admin", "The stored hardware probe (probing first if there is none)", "hardware",
       response=obj(), errors=()),
    Op("POST", "/api/hardware/probe", "admin", "Probe the hardware again and store it", "hardware",
       response=obj(), errors=()),
    Op("GET", "/api/hardware/tier", "admin", "The tier the stored probe picks", "hardware",
       response=obj(("tier",), tier={"anyOf": [obj(), {"type": "null"}]}), errors=()),
    Op("POST", "/api/gpu/release", "admin", "Unload every idle, unpinned slot at once (for a game or a render)",
       "slots", request_required=False,
       response=obj(("released", "kept"), released=arr(STR), kept=arr(obj(("slot", "reason"), slot=STR,
                                                                         reason={"enum": ["pinned", "busy"]}))),
       errors=()),
    Op("GET", "/metrics", "metrics", "Prometheus metrics (an admin or a metrics token; [metrics] in hal0.toml)",
       "hal0", response={"type": "string"}, response_type="text/plain", errors=(404,)),
)

_UI: tuple[Op, ...] = (
    Op("GET", "/", "public", "The dashboard for a browser (Accept: text/html); \"Ollama is running\" otherwise",
       "ui", response={"type": "string"}, response_type="text/plain", errors=()),
    Op("GET", "/ui/", "public", "The dashboard", "ui", response={"type": "string"}, response_type="text/html",
       errors=()),
    Op("GET", "/ui/{name}", "public", "A dashboard file", "ui", params=(Param("name", example="app.js"),),
       response={"type": "string"}, response_type="application/octet-stream", errors=(404,)),
)

OPERATIONS: tuple[Op, ...] = (*_OPENAI, *_ANTHROPIC, *_LLAMA, *_OLLAMA, *_HAL0, *_UI)
