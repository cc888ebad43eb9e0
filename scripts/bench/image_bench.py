"""Added latency of hal0 per image generation, against ComfyUI's own time.

One `hal0 serve` runs the img slot (the project's tiny SD 1.x checkpoint on a real ComfyUI).
Each run generates one image through hal0 (OpenAI request, b64_json answer), and one by
submitting the very same workflow to ComfyUI directly, the way ComfyUI's own API example does
(event socket, POST /prompt, wait for the end, /history, /view). Runs alternate, and every
job has a seed of its own so ComfyUI's result cache never answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from hal0.images.request import parse_image_request
from hal0.images.workflows import build_workflow, layout
from hal0.models.registry import ResolvedModel
from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.serve import serving


async def direct(session: aiohttp.ClientSession, base: str, graph: dict[str, object], output: str) -> float:
    client_id = uuid.uuid4().hex
    t0 = time.perf_counter()
    async with session.ws_connect(f"{base}/ws?clientId={client_id}") as ws:
        async with session.post(f"{base}/prompt", json={"prompt": graph, "client_id": client_id}) as r:
            prompt_id = (await r.json())["prompt_id"]
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                data = event.get("data", {})
                if event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
    async with session.get(f"{base}/history/{prompt_id}") as r:
        images = (await r.json())[prompt_id]["outputs"][output]["images"]
    for image in images:
        async with session.get(f"{base}/view", params=image) as r:
            await r.read()
    return time.perf_counter() - t0


async def through_hal0(session: aiohttp.ClientSession, url: str, token: str, body: dict[str, object]) -> float:
    t0 = time.perf_counter()
    async with session.post(f"{url}/v1/images/generations", json=body,
                            headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        await r.read()
    return time.perf_counter() - t0


async def bench(url: str, token: str, comfy: str, checkpoint: Path, runs: int, size: int, steps: int,
                fmt: str) -> None:
    lay = layout(ResolvedModel(checkpoint.stem, checkpoint))
    res: dict[str, list[float]] = {"direct": [], "hal0": []}
    async with aiohttp.ClientSession() as session:
        for i in range(runs + 1):  # the first pair warms both paths up and is not counted
            body = {"prompt": "a lighthouse at dusk", "size": f"{size}x{size}", "response_format": fmt,
                    "seed": 10_000 + 2 * i, "steps": steps}
            flow = build_workflow(lay, parse_image_request({**body, "seed": 10_001 + 2 * i}), f"bench/{i}")
            pair = [("direct", direct(session, comfy, flow.graph, flow.output)),
                    ("hal0", through_hal0(session, url, token, body))]
            for name, job in (pair if i % 2 else pair[::-1]):
                seconds = await job
                if i:
                    res[name].append(seconds)
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\n{runs} images of {size}x{size}, {steps} steps, each way (hal0 answering {fmt}); medians")
    print(f"  ComfyUI directly {med['direct'] * 1e3:8.1f} ms   through hal0 {med['hal0'] * 1e3:8.1f} ms"
          f"   added {(med['hal0'] - med['direct']) * 1e3:6.1f} ms   ratio {med['hal0'] / med['direct']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--format", choices=["b64_json", "url"], default="b64_json",
                        help="hal0's response_format (url: the image goes to hal0's cache and is not downloaded)")
    args = parser.parse_args()
    m = manifest()["comfyui"]
    with tempfile.TemporaryDirectory() as d:
        home = Path(d) / "home"
        subprocess.run([*HAL0, "init", "--provider-python", f"comfyui={m['python']}", "--provider-bin",
                        f"comfyui={m['bin']}", "--slot-model", f"img={m['checkpoint']}"],
                       env=hal0_env(home), check=True, capture_output=True)
        for name in ("primary", "embed", "stt", "tts"):
            toml = home / f"etc/slots/{name}.toml"
            toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
        port = free_port()
        toml = home / "etc/slots/img.toml"
        text = toml.read_text().replace("enabled = false", "enabled = true").replace("port = 8085", f"port = {port}")
        toml.write_text(text.replace('backend = "rocm"', 'backend = "cpu"'))
        token = (home / "etc/admin.token").read_text().strip()
        with serving(home) as s:
            s.load("img", token)
            asyncio.run(bench(s.url, token, f"http://127.0.0.1:{port}", Path(m["checkpoint"]), args.runs,
                              args.size, args.steps, args.format))
            s.stop()


if __name__ == "__main__":
    main()
