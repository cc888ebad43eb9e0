"""Add other Python versions' compiled extensions to a site-packages folder (scripts/build).

    add_abis.py SITE 3.11 3.12 3.13

For each distribution in SITE that ships extension modules (aiohttp, multidict, yarl, ...), the
wheel of the same version for each listed CPython is downloaded and its ``.so`` files are added
beside the ones already there. Their names carry the version (``_http_parser.cpython-313-x86_64-
linux-gnu.so``), so they never collide, and each interpreter imports only its own; the Python
files of one release are the same for every version. Fails when a wheel is missing for a version.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PLATFORMS = ("manylinux_2_17", "manylinux2014", "manylinux_2_28", "manylinux_2_5", "manylinux1")


def compiled(site: Path) -> dict[str, str]:
    """name -> version of each distribution whose RECORD lists an extension module."""
    out = {}
    for info in site.glob("*.dist-info"):
        record = (info / "RECORD").read_text() if (info / "RECORD").exists() else ""
        if any(line.split(",")[0].endswith(".so") for line in record.splitlines()):
            meta = dict(line.split(": ", 1) for line in (info / "METADATA").read_text().splitlines()
                        if line.startswith(("Name: ", "Version: ")))
            out[meta["Name"]] = meta["Version"]
    return out


def main(site: Path, versions: list[str]) -> None:
    own = f"{sys.version_info[0]}.{sys.version_info[1]}"
    dists = compiled(site)
    machine = platform.machine()
    for version in versions:
        if version == own:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                            "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
                            *(a for p in PLATFORMS for a in ("--platform", f"{p}_{machine}")), "-d", tmp,
                            *(f"{n}=={v}" for n, v in sorted(dists.items()))], check=True,
                           stderr=subprocess.DEVNULL)
            for wheel in sorted(Path(tmp).glob("*.whl")):
                with zipfile.ZipFile(wheel) as z:
                    for member in z.namelist():
                        if member.endswith(".so") and ".data/" not in member:
                            z.extract(member, site)
        print(f"added Python {version}'s extensions of {', '.join(sorted(dists))}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
