"""The curated model catalogue (SPEC section 8): shipped data, its validator, and what uses its ids."""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from hal0.capabilities import RERANK_DEFAULT_MODEL
from hal0.config.defaults import BUILTIN_DEFAULTS
from hal0.errors import ConfigInvalid, RequestInvalid
from hal0.images.workflows import FAMILIES
from hal0.models.catalog import KINDS, PROVIDERS, CatalogEntry, catalog_entry, load_catalog, parse_catalog
from hal0.models.hub import HubRef, parse_hf
from hal0.models.registry import ResolvedModel
from hal0.providers.comfyui import layout
from hal0.runners.engines.moonshine import MOONSHINE_FILES

REPO = Path(__file__).resolve().parent.parent
# The kind of model each slot named in tiers.toml's `models` tables serves.
SLOT_KINDS = {"primary": "chat", "embed": "embed", "rerank": "rerank", "stt": "stt", "tts": "tts", "img": "image"}

GOOD = """\
[[model]]
id = "test-model"
kind = "chat"
family = "test"
provider = "llama-server"
license = "mit"
context_length = 4096
quantization = "Q4_K_M"
memory_gb = 1.5
description = "a model for tests"
checked = "never"

[[model.files]]
source = "hf://owner/repo/model.gguf@abc123"
path = "model.gguf"
size = 1000
sha256 = "{sha}"

[[model.files]]
source = "https://example.com/extra.bin"
path = "sub/extra.bin"
size = 24
""".replace("{sha}", "ab" * 32)


def tier_models() -> list[tuple[str, str, str]]:
    """(tier, slot, model id) for every model tiers.toml seeds."""
    text = resources.files("hal0.hardware").joinpath("tiers.toml").read_text()
    return [(t["name"], slot, mid) for t in tomllib.loads(text)["tier"] for slot, mid in t["models"].items()]


def parse_text(tmp_path: Path, text: str) -> dict[str, CatalogEntry]:
    """Write a catalogue to a file, read it back and validate it, as the loader would."""
    file = tmp_path / "catalog.toml"
    file.write_text(text)
    return parse_catalog(tomllib.loads(file.read_text()), str(file))


# ---------------------------------------------------------------- the shipped catalogue


@pytest.mark.parametrize(("tier", "slot", "model_id"), tier_models())
def test_every_tier_model_is_in_the_catalogue_with_the_slots_kind(tier: str, slot: str, model_id: str) -> None:
    entry = catalog_entry(model_id)
    assert entry is not None, f"tier {tier} seeds {slot} with {model_id!r}, which the catalogue lacks"
    assert entry.kind == SLOT_KINDS[slot]
    # The seeded slot's provider must be able to run it (the rerank child is a llama-server slot).
    seeded_provider = BUILTIN_DEFAULTS.get(slot, BUILTIN_DEFAULTS["embed"])["provider"]
    assert entry.provider == seeded_provider


def test_tiers_name_only_slots_the_catalogue_test_knows() -> None:
    """A new slot in tiers.toml must get a kind here, or the test above would skip its models."""
    assert {slot for _, slot, _ in tier_models()} <= set(SLOT_KINDS)
    assert len(tier_models()) >= 6 * 6


def test_the_default_rerank_model_is_a_rerank_entry() -> None:
    entry = catalog_entry(RERANK_DEFAULT_MODEL)
    assert entry is not None and entry.kind == "rerank"


def test_every_entry_has_files_with_sizes_and_sane_fields() -> None:
    catalog = load_catalog()
    assert len(catalog) >= 15
    for entry in catalog.values():
        assert entry.files, entry.id
        assert all(f.size > 0 for f in entry.files), entry.id
        assert entry.size == sum(f.size for f in entry.files) > 0
        assert entry.provider in PROVIDERS[entry.kind]
        assert entry.checked and entry.description and entry.license and entry.memory_gb > 0
        if entry.kind in ("chat", "embed", "rerank"):
            assert entry.context_length and entry.quantization, entry.id
        for f in entry.files:
            if f.source.startswith("hf://"):
                assert parse_hf(f.source).path


def test_the_catalogue_covers_every_kind_and_the_extra_picks() -> None:
    catalog = load_catalog()
    assert {e.kind for e in catalog.values()} == set(KINDS)
    whisper = [e for e in catalog.values() if e.provider == "whisper"]
    assert whisper and all({f.path for f in e.files} >= {"model.bin", "config.json", "tokenizer.json"}
                           for e in whisper)
    assert catalog["gemma-3-270m-it-q8_0"].chat_template == "gemma"


def test_moonshine_and_kokoro_entries_hold_what_their_engines_load() -> None:
    for entry in load_catalog().values():
        paths = [f.path for f in entry.files]
        if entry.provider == "moonshine":
            assert set(paths) >= set(MOONSHINE_FILES), entry.id
        if entry.provider == "kokoro":
            # The .onnx first (the file the provider loads), its voices file beside it.
            assert paths[0].endswith(".onnx") and any(p.startswith("voices") and p.endswith(".bin") for p in paths)


def test_image_entries_lay_out_as_the_family_comfyui_picks(tmp_path: Path) -> None:
    """The files of each image entry, laid out on disk, are recognised by ComfyUI's provider as
    that entry's family (a checkpoint file, or a folder of Flux parts)."""
    for entry in (e for e in load_catalog().values() if e.kind == "image"):
        folder = tmp_path / entry.id
        for f in entry.files:
            (folder / f.path).parent.mkdir(parents=True, exist_ok=True)
            (folder / f.path).write_bytes(b"")
        path = folder / entry.files[0].path if len(entry.files) == 1 else folder
        assert entry.family in FAMILIES
        assert layout(ResolvedModel(entry.id, path)).family == entry.family, entry.id


def test_load_catalog_hands_out_a_copy() -> None:
    mine = load_catalog()
    mine.clear()
    assert catalog_entry("qwen3-4b-q4_k_m") is not None
    assert load_catalog()
    assert catalog_entry("no-such-model") is None


def test_the_catalogue_ships_inside_the_package() -> None:
    """The zipapp is a wheel of package `hal0`: the data file must be package data."""
    assert resources.files("hal0.models").joinpath("catalog.toml").is_file()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    assert any(fnmatch.fnmatch("hal0.models", pat) for pat in setuptools["packages"]["find"]["include"])
    assert any(fnmatch.fnmatch("models/catalog.toml", pat) for pat in setuptools["package-data"]["hal0"])


# ---------------------------------------------------------------- the validator


def test_a_good_catalogue_parses_into_frozen_entries(tmp_path: Path) -> None:
    entry = parse_text(tmp_path, GOOD)["test-model"]
    assert entry.kind == "chat" and entry.context_length == 4096 and entry.memory_gb == 1.5
    assert [f.path for f in entry.files] == ["model.gguf", "sub/extra.bin"]
    assert entry.files[0].sha256 == "ab" * 32 and entry.files[1].sha256 is None
    assert entry.size == 1024 and entry.chat_template is None
    with pytest.raises(AttributeError):
        entry.id = "other"  # type: ignore[misc]


BAD = [
    # (what changes in GOOD, the key the error names, words in the problem)
    (("checked = \"never\"", "checked = \"never\"\ncolour = \"red\""), "(test-model).colour", "unknown key"),
    (("size = 24", "size = 24\nmirror = \"x\""), "(test-model).files[1].mirror", "unknown key"),
    (("[[model]]\n", "title = \"x\"\n[[model]]\n"), "title", "unknown key"),
    (("memory_gb = 1.5", "memory_gb = \"lots\""), "(test-model).memory_gb", "expected int or float"),
    (("size = 1000", "size = \"1000\""), "(test-model).files[0].size", "expected int"),
    (("context_length = 4096", "context_length = true"), "(test-model).context_length", "expected int"),
    (("family = \"test\"", "family = 3"), "(test-model).family", "expected str"),
    (("description = \"a model for tests\"\n", ""), "(test-model).description", "required key is missing"),
    (("size = 24\n", ""), "(test-model).files[1].size", "required key is missing"),
    (("kind = \"chat\"", "kind = \"video\""), "(test-model).kind", "unknown kind 'video'"),
    (("provider = \"llama-server\"", "provider = \"kokoro\""), "(test-model).provider", "served by llama-server"),
    (("id = \"test-model\"", "id = \"Test Model\""), "(Test Model).id", "must match"),
    (("memory_gb = 1.5", "memory_gb = 0"), "(test-model).memory_gb", "positive"),
    (("source = \"https://example.com/extra.bin\"", "source = \"http://example.com/extra.bin\""),
     "(test-model).files[1].source", "https://"),
    (("source = \"https://example.com/extra.bin\"", "source = \"s3://bucket/extra.bin\""),
     "(test-model).files[1].source", "https://"),
    (("hf://owner/repo/model.gguf@abc123", "hf://owner/model.gguf"), "(test-model).files[0].source", "hf://"),
    (("hf://owner/repo/model.gguf@abc123", "hf://owner/repo/../x.gguf"), "(test-model).files[0].source", "hf://"),
    (("ab" * 32, "ab" * 31), "(test-model).files[0].sha256", "64 lowercase hex"),
    (("ab" * 32, "AB" * 32), "(test-model).files[0].sha256", "64 lowercase hex"),
    (("ab" * 32, "zz" * 32), "(test-model).files[0].sha256", "64 lowercase hex"),
    (("path = \"sub/extra.bin\"", "path = \"/etc/extra.bin\""), "(test-model).files[1].path", "relative path"),
    (("path = \"sub/extra.bin\"", "path = \"../extra.bin\""), "(test-model).files[1].path", "without '..'"),
    (("path = \"sub/extra.bin\"", "path = \"sub/../../extra.bin\""), "(test-model).files[1].path", "without '..'"),
    (("path = \"sub/extra.bin\"", "path = \"\""), "(test-model).files[1].path", "relative path"),
    (("path = \"sub/extra.bin\"", "path = \"sub\\\\extra.bin\""), "(test-model).files[1].path", "relative path"),
    (("path = \"sub/extra.bin\"", "path = \"model.gguf\""), "(test-model).files", "share a path"),
    (("size = 24", "size = 0"), "(test-model).files[1].size", "positive"),
]


@pytest.mark.parametrize(("change", "key", "problem"), BAD, ids=[f"{k}:{p}" for _, k, p in BAD])
def test_each_kind_of_bad_entry_is_refused_naming_catalogue_and_entry(
        tmp_path: Path, change: tuple[str, str], key: str, problem: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigInvalid) as raised:
        parse_text(tmp_path, GOOD.replace(old, new, 1))
    message = str(raised.value)
    assert message.startswith(str(tmp_path / "catalog.toml") + ": ")
    assert key in message and problem in message, message
    assert raised.value.code == "config.invalid"


def test_an_entry_without_files_is_refused(tmp_path: Path) -> None:
    text = GOOD.split("[[model.files]]")[0].replace("checked = \"never\"", "checked = \"never\"\nfiles = []")
    with pytest.raises(ConfigInvalid, match=r"model\[0\] \(test-model\)\.files: an entry needs at least one file"):
        parse_text(tmp_path, text)


def test_a_duplicate_id_is_refused_naming_the_second(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match=r"model\[1\] \(test-model\): duplicate id"):
        parse_text(tmp_path, GOOD + "\n" + GOOD)


def test_an_entry_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match=r"model\[0\]: expected a table"):
        parse_catalog({"model": ["qwen3"]}, "x.toml")
    with pytest.raises(ConfigInvalid, match=r"x.toml: model: expected \[\[model\]\] tables"):
        parse_catalog({"model": {"id": "q"}}, "x.toml")


def test_an_empty_catalogue_is_empty() -> None:
    assert parse_catalog({}, "x.toml") == {}


# ---------------------------------------------------------------- hf:// references


@pytest.mark.parametrize(("source", "expected"), [
    ("hf://Qwen/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf", ("Qwen/Qwen3-4B-GGUF", "Qwen3-4B-Q4_K_M.gguf", "main")),
    ("hf://o/r/onnx/merged/base/float/encoder_model.onnx@48b4e42",
     ("o/r", "onnx/merged/base/float/encoder_model.onnx", "48b4e42")),
    ("hf://o/r.v2/a.bin@refs/pr/1", ("o/r.v2", "a.bin", "refs/pr/1")),
    ("hf://o/r/dir/sub/file.json@v1.0", ("o/r", "dir/sub/file.json", "v1.0")),
])
def test_parse_hf_splits_repo_path_and_revision(source: str, expected: tuple[str, str, str]) -> None:
    assert parse_hf(source) == HubRef(expected[0], expected[1], None, expected[2])


def test_parse_hf_reads_a_quantisation() -> None:
    assert parse_hf("hf://o/r:Q4_K_M@v2") == HubRef("o/r", None, "Q4_K_M", "v2")


@pytest.mark.parametrize("source", [
    "hf://owner/repo", "hf://owner/repo/", "hf://owner", "https://huggingface.co/o/r/resolve/main/a.gguf",
    "hf://o/r/a.gguf@", "hf://o/r/a.gguf@x@y", "hf://o/r/../a.gguf", "hf://o/r/a b.gguf",
    " hf://o/r/a.gguf", "hf://-o/r/a.gguf",
])
def test_parse_hf_refuses_what_is_not_a_file_reference(source: str) -> None:
    with pytest.raises(RequestInvalid, match="is not hf://"):
        parse_hf(source)
