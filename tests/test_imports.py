"""hal0/ imports nothing but the standard library and its three runtime dependencies."""

from __future__ import annotations

import ast
import sys

from tests.helpers.env import REPO

ALLOWED = {"hal0", "aiohttp", "tomli_w", "pyudev", "multidict", "yarl"}
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
