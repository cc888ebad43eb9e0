"""Property tests (hypothesis): the config loader and the dispatch resolver.

The loader: any TOML document, and any bytes at all, in any of hal0's files gives a value or
``config.invalid`` naming the file, never another exception. Documents are drawn both at random
and shaped like hal0's own schema (real section and key names, values of every TOML type), so the
checks behind the parser are reached too. The resolver: for any model name, route and view, an
answer that respects the view, or one of its four documented errors.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing
from pathlib import Path
from typing import Any

import tomli_w
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hal0.auth import list_tokens
from hal0.config import load_config, load_slot
from hal0.config.overrides import read_override
from hal0.config.schema import Hal0Config, SlotConfig
from hal0.dispatch.resolve import DispatchView, SlotView, resolve
from hal0.errors import CapabilityDisabled, ConfigInvalid, ModelNotFound, ModelNotLoaded, ModelWrongModality
from hal0.paths import Paths, resolve_paths
from hal0.roles import ROUTES, Modality

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["on", "off", "json", "text", "default", "reject", "cpu", "whisper",
                                           "http://x", "/abs", "", "0.0.0.0"]),
    st.datetimes(min_value=datetime.datetime(1970, 1, 1)), st.dates(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                                             inner, max_size=4),
                      max_leaves=12)


def shaped(cls: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Tables with the schema's own keys (some of them, plus a stranger now and then)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp) and depth < 2:
            fields[f.name] = shaped(tp, depth + 1) | values
        elif origin is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            fields[f.name] = st.dictionaries(st.text(max_size=8), shaped(typing.get_args(tp)[1], depth + 1) | values,
                                             max_size=2)
        else:
            fields[f.name] = values
    return st.fixed_dictionaries({}, optional=fields).flatmap(
        lambda d: st.dictionaries(st.text(max_size=8), values, max_size=1).map(lambda extra: {**extra, **d}))


def write_toml(file: Path, data: dict[str, Any]) -> bool:
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError):
        return False  # tomli_w cannot write it (no TOML can hold it): nothing to load
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    return True


def fresh(tmp_path: Path) -> Paths:
    paths = resolve_paths({"HAL0_HOME": str(tmp_path / "home")})
    paths.slots_dir.mkdir(parents=True, exist_ok=True)
    return paths


def value_or_config_invalid(load: Any, file: Path) -> None:
    try:
        load()
    except ConfigInvalid as e:
        assert e.code == "config.invalid" and str(file) in e.message


@PROPS
@given(data=shaped(Hal0Config) | st.dictionaries(st.text(max_size=8), values, max_size=5))
def test_any_hal0_toml_is_a_config_or_config_invalid(tmp_path: Path, data: dict[str, Any]) -> None:
    paths = fresh(tmp_path)
    if write_toml(paths.hal0_toml, data):
        value_or_config_invalid(lambda: load_config(paths), paths.hal0_toml)


@PROPS
@given(data=shaped(SlotConfig))
def test_any_slot_toml_is_a_slot_or_config_invalid(tmp_path: Path, data: dict[str, Any]) -> None:
    file = fresh(tmp_path).slot_toml("custom")
    if write_toml(file, data):
        value_or_config_invalid(lambda: load_slot(file), file)


@PROPS
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@example(raw=b"a = " + b"[" * 5000 + b"]" * 5000)  # deeper than Python's recursion limit
@example(raw=b"[api]\nport = 80\xe9\n")  # not UTF-8
def test_any_bytes_in_any_file_are_a_value_or_config_invalid(tmp_path: Path, raw: bytes) -> None:
    """hal0.toml, a slot TOML, slots/<name>.env and tokens.toml."""
    paths = fresh(tmp_path)
    for file, load in ((paths.hal0_toml, lambda: load_config(paths)),
                       (paths.slot_toml("custom"), lambda: load_slot(paths.slot_toml("custom"))),
                       (paths.slot_env("primary"), lambda: read_override(paths, "primary")),
                       (paths.tokens_toml, lambda: list_tokens(paths.tokens_toml))):
        file.write_bytes(raw)
        value_or_config_invalid(load, file)


# --- the resolver --------------------------------------------------------------------------

KINDS = [str(m) for m in Modality]
names = st.sampled_from(["primary", "embed", "stt", "tts", "img", "embed-rerank", "custom", "x"])
model_ids = st.sampled_from(["qwen3-4b", "bge", "whisper-1", "gpt-4o-mini", "a:b", "primary:qwen3-4b",
                             "embed:bge", ""]) | st.text(max_size=12)
slot_views = st.builds(SlotView, names, st.frozensets(model_ids, max_size=3), st.none() | model_ids,
                       st.sampled_from(KINDS))
views = st.builds(
    DispatchView,
    st.lists(slot_views, max_size=6, unique_by=lambda s: s.name).map(tuple),
    st.dictionaries(model_ids, st.sampled_from(["remote", "otherbox"]), max_size=3),
    st.frozensets(model_ids, max_size=3),
    st.sampled_from(["default", "reject"]),
)
ERRORS = (ModelNotFound, ModelNotLoaded, ModelWrongModality, CapabilityDisabled)


@settings(max_examples=500, deadline=None)
@given(model=st.none() | model_ids, path=st.sampled_from(sorted(ROUTES)), view=views)
def test_the_resolver_answers_within_the_view_or_with_a_documented_error(model: str | None, path: str,
                                                                           view: DispatchView) -> None:
    kind, default = ROUTES[path]
    try:
        route = resolve(model, path, view)
    except ERRORS as e:
        assert e.status in (400, 404, 409)
        if isinstance(e, ModelWrongModality):
            assert e.details["route_kind"] == str(kind)
        return
    assert resolve(model, path, view) == route  # a pure function
    assert route.model == (model or None)
    if route.upstream is not None:
        assert route.slot is None and view.upstream_models[model] == route.upstream  # type: ignore[index]
        return
    assert route.slot in view.by_name and view.by_name[route.slot].kind == kind
    if not model:
        assert route.slot == default
    elif model in view.by_name and ":" not in model:
        assert route.slot == model  # a slot's name picks that slot
    elif model.partition(":")[0] in view.by_name and ":" in model:
        assert route.slot == model.partition(":")[0]
    elif any(model in s.models for s in view.slots):
        assert model in view.by_name[route.slot].models or route.slot == model
    elif model in view.upstream_models:
        raise AssertionError("an upstream model went to a slot")
    else:
        assert view.unknown_model == "default" and route.slot == default and model not in view.registry_ids
