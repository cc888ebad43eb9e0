"""``hal0 probe [--apply]``: show what this box has, what changed since hardware.json and which
slot files would be seeded; ``--apply`` writes hardware.json and the missing slot files."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hal0.atomic import atomic_write
from hal0.bootstrap import describe_missing, missing_models, write_seeds
from hal0.cli.output import print_json
from hal0.hardware import probe
from hal0.hardware.seeding import match_tier
from hal0.paths import Paths

__all__ = ["run", "summary"]


def summary(hw: dict[str, Any]) -> list[str]:
    cpu, mem = hw["cpu"], hw["memory"]
    lines = [f"cpu:     {cpu['model'] or 'unknown'} ({cpu['cores'] or '?'} cores, {cpu['threads'] or '?'} threads)",
             f"memory:  {(mem['total_bytes'] or 0) / 2**30:.1f} GiB"
             + (f", cgroup limit {mem['cgroup_limit_bytes'] / 2**30:.1f} GiB" if mem["cgroup_limit_bytes"] else "")]
    for g in hw["gpus"]:
        memory = ", ".join(f"{k[:-6]} {g[k] / 2**30:.1f} GiB" for k in ("vram_bytes", "gtt_bytes") if g[k])
        star = "*" if g["pci"] == hw["primary_gpu"] else " "
        lines.append(f"gpu{star}    {g['pci']} {g['vendor'] or g['vendor_id']} {g['name'] or g['device_id']} "
                     f"driver={g['driver'] or '-'} {memory}".rstrip())
    if not hw["gpus"]:
        lines.append("gpu:     none")
    lines.append(f"vulkan:  {', '.join(i['library'] or i['file'] for i in hw['vulkan']['icds']) or 'no ICD'}")
    lines.append(f"rocm:    {'/dev/kfd present' if hw['rocm']['kfd'] else 'no /dev/kfd'}")
    npus = ", ".join(f"{n['node']} ({n['driver']})" for n in hw["npu"]["devices"])
    lines.append(f"npu:     {npus or 'none'}")
    lines.append(f"(read from {hw['source']})")
    return lines


def run(args: argparse.Namespace, paths: Paths) -> int:
    hw = probe(disk=paths.state_dir if paths.state_dir.exists() else None)
    old = json.loads(paths.hardware_json.read_text()) if paths.hardware_json.exists() else None
    if args.json:
        print_json(hw)
    else:
        print("\n".join(summary(hw)))
        if old is None:
            print(f"\n{paths.hardware_json} does not exist yet")
        else:
            changed = sorted(k for k in hw if k != "disk" and hw[k] != old.get(k))
            print(f"\nchanged since {paths.hardware_json}: {', '.join(changed) or 'nothing'}")
    tier = match_tier(hw)["name"]
    missing = write_seeds(paths, hw, dry_run=True)
    if not args.json:
        print(f"tier: {tier}; slot files to seed: {', '.join(p.name for p in missing) or 'none (all exist)'}")
    if args.apply:
        atomic_write(paths.hardware_json, json.dumps(hw, indent=2) + "\n")
        written = write_seeds(paths, hw)
        if not args.json:
            print(f"wrote {paths.hardware_json}" + "".join(f", {p}" for p in written))
    if not args.json:
        for line in describe_missing(missing_models(paths)):
            print(line)
    return 0
