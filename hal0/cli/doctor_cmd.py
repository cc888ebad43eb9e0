"""``hal0 doctor``: one line per check, ``ok``, ``warn`` or ``fail``, each with the fix to run.

It reads the box as hal0 would: the config, the engines, each enabled slot's model (on disk,
verified, fitting in memory), the GPU devices, the disk, and the server (and, for a system
install, the service). Exit 1 when any check fails.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hal0 import __version__
from hal0.cli.output import print_json
from hal0.paths import Paths

__all__ = ["Check", "checks", "run"]

DEVICES = {"vulkan": ("dev/dri/renderD*",), "rocm": ("dev/kfd", "dev/dri/renderD*"), "cuda": ("dev/nvidia*",)}
NVIDIA_VULKAN = ("dev/nvidia*",)  # NVIDIA's Vulkan driver opens /dev/nvidia*; a headless card has no render node
SERVICE_USER = "hal0"
# what each engine's process imports first: it starts when these import
ENGINE_MODULES = {"whisper": "faster_whisper", "moonshine": "moonshine_onnx", "kokoro": "kokoro_onnx",
                  "comfyui": "torch"}


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok, warn, fail
    message: str
    fix: str = ""


# aiohttp's compiled extensions: without them (a pyz built for another Python) it runs, slower
COMPILED = ("aiohttp._http_parser", "aiohttp._http_writer", "multidict._multidict", "yarl._quoting_c",
            "frozenlist._frozenlist", "propcache._helpers_c")


def _python() -> Check:
    import importlib

    v = sys.version_info
    if v < (3, 11):
        return Check("python", "fail", f"Python {v.major}.{v.minor} is too old", "install Python 3.11 or newer")
    missing = []
    for module in COMPILED:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        return Check("python", "warn", f"Python {v.major}.{v.minor}.{v.micro} runs hal0 {__version__} without the "
                     f"compiled extensions {', '.join(missing)} (slower HTTP)",
                     f"install a hal0.pyz built for Python {v.major}.{v.minor} (scripts/build)")
    return Check("python", "ok", f"Python {v.major}.{v.minor}.{v.micro}, hal0 {__version__}, aiohttp's compiled "
                 "extensions")


def _engine(provider: str, paths: Paths, settings: Any, backends: set[str]) -> Check:
    from hal0.backends import engine_settings

    installed = engine_settings(paths, provider)
    if provider == "llama-server":
        return _llama_server(paths, settings, backends)
    if provider == "flm":
        binary = settings.bin or shutil.which("flm")
        if not binary or not Path(binary).exists():
            return Check("engine flm", "fail", "flm is not installed",
                         "put flm on PATH, or set [providers.flm].bin in hal0.toml to its path")
        from hal0.llamacpp.devices import run as run_binary

        ran = run_binary(Path(binary), "--version", timeout=20)
        if ran.code != 0:
            return Check("engine flm", "fail", f"{binary} --version {_said(ran)}",
                         "reinstall flm, or point [providers.flm].bin at one that runs")
        return Check("engine flm", "ok", f"{binary} ({(ran.output.strip().splitlines() or ['runs'])[0]})")
    python = settings.python or installed.get("python")
    if not python or not Path(python).exists():
        return Check(f"engine {provider}", "fail", f"the {provider} engine is not installed",
                     f"hal0 backend install {provider}")
    module = ENGINE_MODULES.get(provider)
    if module is None:
        return Check(f"engine {provider}", "ok", f"{provider} in {Path(python).parent.parent}")
    # what the slot's process needs: the engine's package, and for a runner hal0's runner beside it
    import hal0

    hal0_root = str(Path(hal0.__file__).resolve().parent.parent)
    code = f"import {module}" if provider == "comfyui" else \
        f"import sys; sys.path.insert(0, {hal0_root!r}); import hal0.runners.cli, {module}"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check(f"engine {provider}", "fail", f"{python} does not start: {e}", f"hal0 backend install {provider}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return Check(f"engine {provider}", "fail", f"{python} cannot import {module}: {last}",
                     f"hal0 backend install {provider}")
    return Check(f"engine {provider}", "ok", f"{provider} in {Path(python).parent.parent} (imports {module})")


def _said(ran: Any) -> str:
    last = ran.output.strip().splitlines()[-1:] or [""]
    return f"{'exits ' + str(ran.code) if ran.code is not None else 'does not start'}: {last[0][:200]}"


def _llama_server(paths: Paths, settings: Any, backends: set[str]) -> Check:
    """Present, starts (``--version``), and, when its flavor or a slot's backend wants the GPU the
    probe found, lists that GPU (``--list-devices``), else the libraries or driver to fix."""
    import json

    from hal0.hardware.flavors import primary_gpu
    from hal0.llamacpp.devices import (
        NVIDIA_VULKAN_PACKAGES,
        gpu_devices,
        list_devices,
        missing_packages,
        nvidia_vulkan,
        nvidia_vulkan_problem,
        parse_version,
        run,
    )

    name, reinstall = "engine llama-server", "hal0 backend install llama-server"
    binary = settings.bin or shutil.which("llama-server")
    if not binary or not Path(binary).exists():
        return Check(name, "fail", "llama-server is not installed", reinstall)
    ran = run(Path(binary), "--version", timeout=20)
    if ran.code != 0:
        return Check(name, "fail", f"{binary} --version {_said(ran)}", reinstall)
    version = parse_version(ran.output) or "unknown build"
    flavor = settings.flavor or next(iter(sorted(backends - {"cpu", "npu"})), "cpu")
    try:
        hw = json.loads(paths.hardware_json.read_text())
    except (OSError, ValueError):
        hw = {}
    devices, listed = list_devices(Path(binary))
    if listed.code != 0:
        return Check(name, "fail", f"{binary} --list-devices {_said(listed)}", reinstall)
    on_nvidia_vulkan = nvidia_vulkan(hw, flavor)
    missing = missing_packages(NVIDIA_VULKAN_PACKAGES) if on_nvidia_vulkan else []
    problem = nvidia_vulkan_problem(hw, flavor, devices, missing)
    if problem:
        fix = f"sudo apt-get install {' '.join(missing or NVIDIA_VULKAN_PACKAGES)}" if on_nvidia_vulkan else \
            f"{reinstall} --flavor cpu, or fix the GPU driver"
        return Check(name, "fail", problem, fix)
    seen = ", ".join(f"{d.name} {d.description}" for d in devices) or "no GPU device"
    said = f"{binary} ({settings.flavor or 'flavor unknown'}, llama.cpp {version}; {seen})"
    other = sorted(backends - {"cpu", "npu", flavor}) if settings.flavor else []  # slots written for another build
    gpus = gpu_devices(devices)
    if other and not gpus and primary_gpu(hw) is not None:  # a cpu build: such a slot refuses to start
        return Check(name, "fail", f"{said}: the llama-server slots ask for {', '.join(other)}, and a build that "
                                   "lists no GPU does not start them", f"{reinstall}, or set the slots' backend to cpu")
    if other:
        runs = f"on {gpus[0].name} ({gpus[0].description})" if gpus else "on the CPU"
        fix = f"{reinstall} --flavor {other[0]}" if gpus else "set the slots' backend to cpu (the probe found no GPU)"
        return Check(name, "warn", f"{said}: the llama-server slots ask for {', '.join(other)} and run {runs}", fix)
    return Check(name, "ok", said)


def _model(name: str, slot: Any, paths: Paths) -> Check:
    from hal0.config.overrides import read_override
    from hal0.errors import Hal0Error
    from hal0.hardware.fit import too_large
    from hal0.models.catalog import catalog_entry
    from hal0.models.registry import Registry, resolve_model

    ref = read_override(paths, name) or slot.model.default
    if not ref:
        return Check(f"slot {name}", "fail", "no model configured", f"hal0 slot swap {name} --model ID")
    registry = Registry(paths)
    try:
        model = resolve_model(ref, registry)
    except Hal0Error as e:
        pick = catalog_entry(ref, paths.catalog_toml) if not ref.startswith("/") else None
        if pick is not None:
            return Check(f"slot {name}", "warn", f"{ref} is not on disk yet ({pick.size / 1e9:.2f} GB); the first "
                         "load or request pulls it", f"hal0 model pull {ref}")
        return Check(f"slot {name}", "fail", e.message, f"hal0 slot swap {name} --model ID")
    problem = too_large(model.path, slot.model.context_size, slot.backend, paths.hardware_json)
    if problem is not None:
        return Check(f"slot {name}", "fail", f"{ref} needs about {problem['needed'] / 2**30:.1f} GiB, the "
                     f"{slot.backend} backend has {problem['available'] / 2**30:.1f} GiB",
                     "a smaller model (hal0 model catalog --fits), or a smaller [model].context_size")
    entry = registry.get(ref)
    if entry is not None and entry.files and not entry.verified:
        return Check(f"slot {name}", "warn", f"{ref} was pulled without a checksum to verify it against",
                     f"hal0 model rm {ref} && hal0 model pull {entry.source}")
    how = "verified" if entry is not None and entry.verified else "on disk"
    return Check(f"slot {name}", "ok", f"{ref} ({how}, {model.path})")


def _devices(backends: set[str], root: Path, service_user: str, vendor: str | None = None) -> list[Check]:
    """Can hal0 open the GPU devices its backends use (``vendor``: the probe's primary GPU's)? For the
    service user when it exists."""
    try:
        user = pwd.getpwnam(service_user)
        groups = {g.gr_gid for g in grp.getgrall() if service_user in g.gr_mem} | {user.pw_gid}
    except KeyError:
        user, groups = None, set()
    out = []
    for backend in sorted(backends & set(DEVICES)):
        patterns = NVIDIA_VULKAN if backend == "vulkan" and vendor == "nvidia" else DEVICES[backend]
        found = sorted({p for pattern in patterns for p in root.glob(pattern)})
        if not found:
            out.append(Check(f"devices {backend}", "fail", f"no {', '.join('/' + p for p in patterns)}",
                             "install the GPU driver, or give the slot backend = \"cpu\""))
            continue
        for dev in found:
            st = dev.stat()
            if user is not None:
                ok = st.st_mode & 0o006 == 0o006 or (st.st_gid in groups and st.st_mode & 0o060 == 0o060) \
                    or st.st_uid == user.pw_uid
                who = f"user {service_user}"
            else:
                ok, who = os.access(dev, os.R_OK | os.W_OK), "this user"
            if ok:
                out.append(Check(f"device {dev.name}", "ok", f"{who} can use /{dev.relative_to(root)}"))
                continue
            try:
                group = grp.getgrgid(st.st_gid).gr_name
            except KeyError:
                group = str(st.st_gid)
            out.append(Check(f"device {dev.name}", "fail", f"{who} cannot open /{dev.relative_to(root)} "
                             f"(group {group})", f"sudo usermod -aG {group} {service_user if user else '$USER'}"))
    return out


def _server(paths: Paths) -> list[Check]:
    from hal0.client import ApiClient, ApiError

    out = []
    if paths.mode == "system" and shutil.which("systemctl"):
        state = subprocess.run(["systemctl", "is-active", "hal0"], capture_output=True, text=True).stdout.strip()
        out.append(Check("service", "ok" if state == "active" else "fail", f"hal0.service is {state or 'unknown'}",
                         "" if state == "active" else "sudo systemctl start hal0; journalctl -u hal0 -n 50"))
    api = ApiClient(paths)
    try:
        slots = api.call("GET", "/api/slots", timeout=5)["slots"]
    except ApiError as e:
        level = "fail" if paths.mode == "system" else "warn"
        return [*out, Check("server", level, e.message, "hal0 serve" if paths.mode != "system"
                            else "sudo systemctl restart hal0")]
    out.append(Check("server", "ok", f"answering at {api.base_url}"))
    for s in slots:
        if s["state"] == "error":
            out.append(Check(f"slot {s['name']} now", "fail", s["message"][:200], f"hal0 slot restart {s['name']}"))
    loads = [(s["loaded_at"], s["name"]) for s in slots if s.get("loaded_at")]
    if loads:
        when, name = max(loads)
        out.append(Check("last load", "ok", f"{name} loaded its model {_ago(time.time() - when)} ago"))
    elif any(s["enabled"] for s in slots):
        out.append(Check("last load", "warn", "no slot has loaded a model since hal0 started",
                         "hal0 slot load primary (or send it a request)"))
    return out


def _primary_vendor(paths: Paths) -> str | None:
    import json

    from hal0.hardware.flavors import primary_gpu

    try:
        gpu = primary_gpu(json.loads(paths.hardware_json.read_text()))
    except (OSError, ValueError, AttributeError):
        return None
    return str(gpu["vendor"]) if gpu and gpu.get("vendor") else None


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def checks(paths: Paths, root: Path = Path("/"), service_user: str = SERVICE_USER) -> list[Check]:
    from hal0.config import load_config, load_slots
    from hal0.config.schema import ProviderConfig
    from hal0.errors import ConfigInvalid

    out = [_python()]
    try:
        config, slots = load_config(paths), load_slots(paths)
    except ConfigInvalid as e:
        return [*out, Check("config", "fail", e.message, f"fix {e.details.get('file')}, then hal0 config validate")]
    out.append(Check("config", "ok", f"{paths.config_dir} ({paths.mode} mode)"))
    enabled = {name: s for name, s in slots.items() if s.enabled}
    for provider in sorted({s.provider for s in enabled.values()}):
        # a slot split over RPC workers uses their devices, whatever this box's build lists
        backends: set[str] = {s.backend for s in enabled.values() if s.provider == provider and not s.rpc}
        out.append(_engine(provider, paths, config.providers.get(provider, ProviderConfig()), backends))
    out += [_model(name, s, paths) for name, s in enabled.items()]
    out += _devices({s.backend for s in enabled.values()}, root, service_user, _primary_vendor(paths))
    from hal0.bootstrap import missing_models

    need = sum(size for _, _, size in missing_models(paths))
    folder = paths.state_dir if paths.state_dir.exists() else paths.state_dir.parent
    free = shutil.disk_usage(folder).free
    pulls = f", {need / 1e9:.1f} GB of models to pull" if need else ""
    out.append(Check("disk", "ok" if free > need else "fail", f"{free / 1e9:.1f} GB free in {folder}{pulls}",
                     "" if free > need else "free some space, or choose smaller models (hal0 model catalog --fits)"))
    return out + _server(paths)


def run(args: argparse.Namespace, paths: Paths) -> int:
    found = checks(paths, Path(args.root))
    if args.json:
        print_json([asdict(c) for c in found])
    else:
        for c in found:
            fix = f"\n      fix: {c.fix}" if c.fix and c.level != "ok" else ""
            print(f"{c.level:4}  {c.name}: {c.message}{fix}")
    return 1 if any(c.level == "fail" for c in found) else 0
