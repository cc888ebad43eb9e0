"""hal0/ imports nothing but the standard library and its runtime dependencies."""

from __future__ import annotations

import ast
import sys

from tests.helpers.env import REPO

ALLOWED = {"hal0", "aiohttp", "tomli_w", "pyudev", "multidict", "yarl", "prometheus_client", "wyoming"}
# Modules that run inside a backend's own virtualenv may import that backend's packages.
RUNNER_DIRS = ("hal0/runners/engines",)


def imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_stdlib_and_runtime_dependencies() -> None:
    bad = {}
    for f in sorted((REPO / "hal0").rglob("*.py")):
        rel = f.relative_to(REPO).as_posix()
        if rel.startswith(RUNNER_DIRS):
            continue
        extra = imported_roots(f.read_text()) - ALLOWED - set(sys.stdlib_module_names)
        if extra:
            bad[rel] = sorted(extra)
    assert bad == {}


def test_the_checker_sees_a_forbidden_import() -> None:
    source = "import numpy\nfrom requests import get\nfrom . import x\n"
    assert imported_roots(source) == {"numpy", "requests"}


# hal0's layers, lowest first: a package may import only from layers below its own (and itself).
# Adding a package means giving it a place here; an arrow pointing up fails the test below.
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(layer.split()) for layer in (
    "__init__ errors atomic paths events roles systemd",  # facts, helpers and data with no hal0 dependencies
    "web config auth models backends",  # the shared aiohttp base, config, tokens, the registry, engines
    "hardware client runners",  # the probe, the CLI's API client, the adapter servers
    "providers bootstrap llamacpp",  # how each backend is launched and probed; `hal0 init`; llama-server builds
    "slots",  # owners, processes, the gate, the change channel
    "dispatch capabilities worker",  # /v1 routing and proxying; the capability service; `hal0 worker`
    "images dialects wyoming metrics openwebui",  # OpenAI <-> ComfyUI; Ollama, Anthropic, Responses, FIM; Home
    # Assistant's Wyoming; Prometheus; Open WebUI run beside the slots
    "server",  # the aiohttp application
    "cli",
    "__main__",
))


def rank(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"hal0.{package} has no layer: give it one in LAYERS")


def hal0_imports(source: str) -> set[str]:
    """The hal0 packages a module imports (``from hal0 import x`` counts as ``x``), at any depth."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "hal0" else [node.module]
        found |= {n.split(".")[1] for n in names if n.startswith("hal0.")}
    return {"__init__" if p == "__version__" else p for p in found}


def upward_imports(files: dict[str, str]) -> list[str]:
    """``{"hal0/pkg/mod.py": source}`` -> every import of a package that is not in a lower layer."""
    bad = []
    for rel, source in sorted(files.items()):
        parts = rel.removeprefix("hal0/").removesuffix(".py").split("/")
        own = parts[0]
        for dst in sorted(hal0_imports(source) - {own}):
            if rank(dst) >= rank(own):
                bad.append(f"{rel} imports hal0.{dst} (layer {rank(dst)} >= its own {rank(own)})")
    return bad


def test_no_layer_imports_a_higher_one() -> None:
    files = {f.relative_to(REPO).as_posix(): f.read_text() for f in sorted((REPO / "hal0").rglob("*.py"))}
    assert upward_imports(files) == []


def test_the_layer_check_sees_an_upward_import() -> None:
    """The old cycles: runners imported the server's middleware, slots imported dispatch."""
    files = {"hal0/runners/base.py": "from hal0.server.http import json_response\n",
             "hal0/slots/slot.py": "def f():\n    from hal0.dispatch import admission\n",
             "hal0/dispatch/x.py": "from hal0 import slots\n"}
    assert upward_imports(files) == [
        "hal0/runners/base.py imports hal0.server (layer 7 >= its own 2)",
        "hal0/slots/slot.py imports hal0.dispatch (layer 5 >= its own 4)",
    ]
