"""Image generation through `hal0 serve`, a real ComfyUI and the official OpenAI SDK.

The checkpoint is the project's tiny SD 1.x model (scripts/dev/make_sd_checkpoint.py): ComfyUI
loads it as a full model and returns deterministic noise of the requested size.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from hal0.images.workflows import FAMILIES, template
from tests.helpers.env import HAL0, free_port, hal0_env, manifest
from tests.helpers.openapi import validate
from tests.helpers.serve import Served, serving

pytestmark = [pytest.mark.backends, pytest.mark.slow]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def img_toml(port: int, model: str) -> str:
    return (f'name = "img"\nprovider = "comfyui"\nbackend = "cpu"\nport = {port}\nenabled = true\n'
            f'max_inflight = 4\n[model]\ndefault = "{model}"\n[server]\nthreads = 2\n')


@pytest.fixture(scope="module")
def hal0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    home = tmp_path_factory.mktemp("images")
    m = manifest()["comfyui"]
    subprocess.run([*HAL0, "init", "--provider-python", f"comfyui={m['python']}",
                    "--provider-bin", f"comfyui={m['bin']}"], env=hal0_env(home), check=True, capture_output=True)
    for name in ("primary", "embed", "stt", "tts"):
        toml = home / f"etc/slots/{name}.toml"
        toml.write_text(toml.read_text().replace("enabled = true", "enabled = false"))
    (home / "etc/slots/img.toml").write_text(img_toml(free_port(), m["checkpoint"]))
    (home / "etc/slots/noclip.toml").write_text(
        img_toml(free_port(), m["checkpoint_noclip"]).replace('name = "img"', 'name = "noclip"'))
    token = (home / "etc/admin.token").read_text().strip()
    with serving(home) as s:
        s.load("img", token)
        yield s, token
        s.stop()


def b64_png(client: openai.OpenAI, **kw: Any) -> bytes:
    out = client.images.generate(prompt=kw.pop("prompt", "a lighthouse at dusk"), response_format="b64_json", **kw)
    assert out.data
    return base64.b64decode(out.data[0].b64_json or "")


def test_b64_json_and_the_response_shape(hal0: tuple[Served, str], client: openai.OpenAI) -> None:
    raw = client.images.with_raw_response.generate(prompt="a red bicycle", size="64x64", response_format="b64_json",
                                                   extra_body={"seed": 7, "steps": 3, "negative_prompt": "blur"})
    assert raw.headers["X-Hal0-Slot"] == "img"
    body = json.loads(raw.content)
    validate("ImagesResponse", body)
    assert len(body["data"]) == 1 and png_size(base64.b64decode(body["data"][0]["b64_json"])) == (64, 64)
    extras = body["_hal0"]
    assert (extras["seed"], extras["steps"], extras["negative_prompt"]) == (7, 3, "blur")
    assert extras["family"] == "sd15" and extras["slot"] == "img" and extras["sampler"] == "euler"


def test_url_answers_download_without_a_token(hal0: tuple[Served, str], client: openai.OpenAI) -> None:
    out = client.images.generate(model="img", prompt="a lighthouse", size="128x64", n=2, response_format="url")
    assert len(out.data) == 2
    pngs = []
    for item in out.data:
        assert item.url and item.url.startswith(hal0[0].url + "/v1/images/files/")
        with urllib.request.urlopen(item.url, timeout=30) as r:  # no Authorization header
            assert r.headers["Content-Type"] == "image/png"
            pngs.append(r.read())
    assert [png_size(p) for p in pngs] == [(128, 64), (128, 64)]
    assert pngs[0] != pngs[1]  # one batch: two different images
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(out.data[0].url.rsplit("/", 1)[0] + "/AAAAAAAAAAAAAAAAAAAAAA.png", timeout=30)
    e.value.close()
    assert e.value.code == 404


def test_seed_and_prompt_decide_the_image(client: openai.OpenAI) -> None:
    a = b64_png(client, size="64x64", extra_body={"seed": 11})
    again = b64_png(client, size="64x64", extra_body={"seed": 11})
    other_seed = b64_png(client, size="64x64", extra_body={"seed": 12})
    other_prompt = b64_png(client, prompt="a field of tulips", size="64x64", extra_body={"seed": 11})
    assert a == again
    assert len({a, other_seed, other_prompt}) == 3


@pytest.mark.parametrize(("kw", "param", "code"), [
    ({"prompt": ""}, "prompt", "request.invalid"),
    ({"size": "100x7"}, "size", "request.invalid_size"),
    ({"size": "4096x4096"}, "size", "request.invalid_size"),
    ({"n": 0}, "n", "request.invalid"),
    ({"n": 9}, "n", "request.invalid"),
    ({"response_format": "webp"}, "response_format", "request.invalid"),
])
def test_bad_requests_are_400(client: openai.OpenAI, kw: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(**{"prompt": "a cat", **kw})
    assert (e.value.body["param"], e.value.body["code"]) == (param, code)  # type: ignore[index]


def test_a_missing_prompt_and_models_that_cannot_draw(hal0: tuple[Served, str], client: openai.OpenAI) -> None:
    s, token = hal0
    req = urllib.request.Request(s.url + "/v1/images/generations", b'{"size": "64x64"}', method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    with e.value:
        assert e.value.code == 400 and json.loads(e.value.read())["error"]["param"] == "prompt"
    with pytest.raises(openai.BadRequestError, match="slot primary serves chat, not images") as bad:
        client.images.generate(model="primary", prompt="a cat", size="64x64")
    assert bad.value.body["code"] == "model.wrong_modality"  # type: ignore[index]


def test_unknown_models_use_the_img_slot_and_other_models_are_not_loaded(client: openai.OpenAI) -> None:
    out = client.images.generate(model="dall-e-3", prompt="a cat", size="64x64", response_format="b64_json")
    assert png_size(base64.b64decode(out.data[0].b64_json or "")) == (64, 64)  # type: ignore[index]
    with pytest.raises(openai.ConflictError) as e:
        client.images.generate(model="noclip:some-other-model", prompt="a cat", size="64x64")
    assert e.value.body["code"] == "model.not_loaded"  # type: ignore[index]


def test_comfyui_execution_errors_come_back_in_the_envelope(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as e:
        client.images.generate(model="noclip", prompt="a cat", size="64x64")
    err = e.value.body
    assert err["code"] == "slot.backend_error"  # type: ignore[index]
    details = err["details"]  # type: ignore[index]
    assert details["stage"] == "execution" and details["node_type"] == "CLIPTextEncode"
    assert "clip input is invalid" in details["comfyui_message"]


def test_concurrent_requests_each_get_their_own_images(client: openai.OpenAI) -> None:
    sizes = {"64x64": (64, 64), "128x64": (128, 64), "64x128": (64, 128)}
    results: dict[str, tuple[int, int]] = {}

    def one(size: str) -> None:
        results[size] = png_size(b64_png(client, size=size, extra_body={"seed": len(size)}))
    workers = [threading.Thread(target=one, args=(size,)) for size in sizes]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert results == sizes


def comfy_port(s: Served) -> int:
    return int(s.get("/api/slots/img", (s.home / "etc/admin.token").read_text().strip())[1]["port"])


def sse(s: Served, token: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """hal0's /api/events, as (kind, data), as they come."""
    req = urllib.request.Request(s.url + "/api/events", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        kind = ""
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                yield kind, json.loads(line.split(":", 1)[1])


def first_progress(stream: Iterator[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return next(data for kind, data in stream if kind == "image.progress")


def long_job(s: Served, token: str) -> socket.socket:
    """Send a slow request by hand and return the open socket (closing it is the disconnect)."""
    body = json.dumps({"prompt": "a very slow painting", "size": "512x512", "steps": 150, "seed": 5}).encode()
    sock = socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1])))
    sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def test_a_client_that_leaves_interrupts_its_prompt(hal0: tuple[Served, str], client: openai.OpenAI) -> None:
    s, token = hal0
    events = sse(s, token)
    sock = long_job(s, token)
    prompt_id = first_progress(events)["prompt_id"]
    events.close()
    sock.close()
    # ComfyUI runs prompts in order: once this one is answered, the one left behind has ended.
    assert png_size(b64_png(client, size="64x64")) == (64, 64)
    with urllib.request.urlopen(f"http://127.0.0.1:{comfy_port(s)}/history/{prompt_id}", timeout=30) as r:
        status = json.loads(r.read())[prompt_id]["status"]
    assert [m[0] for m in status["messages"]][-1] == "execution_interrupted"


def test_comfyui_killed_mid_job_gives_an_error_and_restarts(hal0: tuple[Served, str],
                                                            client: openai.OpenAI) -> None:
    s, token = hal0
    pid = s.get("/api/slots/img", token)[1]["pid"]
    events = sse(s, token)
    result: dict[str, Any] = {}

    def generate() -> None:
        try:
            client.images.generate(prompt="a slow one", size="512x512", extra_body={"steps": 150})
        except openai.APIStatusError as e:
            result["error"] = (e.status_code, e.body)
    worker = threading.Thread(target=generate)
    worker.start()
    first_progress(events)
    subprocess.run(["kill", "-9", str(pid)], check=True)
    worker.join(60)
    status, body = result["error"]
    assert status == 502 and body["code"] == "slot.unreachable" and body["details"]["slot"] == "img"
    states = []
    for kind, data in events:  # the supervisor restarts it
        if kind == "slot.state" and data["slot"] == "img":
            states.append(data["state"])
            if data["state"] == "ready" and "error" in states:
                break
    events.close()
    assert states[states.index("error"):] == ["error", "starting", "warming", "ready"]
    assert png_size(b64_png(client, size="64x64")) == (64, 64)
    assert s.get("/api/slots/img", token)[1]["pid"] != pid


@pytest.mark.parametrize("family", FAMILIES)
def test_every_template_fits_this_comfyuis_nodes(hal0: tuple[Served, str], family: str) -> None:
    """Node classes, input names and the defaults' sampler and scheduler, checked against the
    node definitions of the real ComfyUI (/object_info): SDXL Turbo and Flux too, without their weights."""
    with urllib.request.urlopen(f"http://127.0.0.1:{comfy_port(hal0[0])}/object_info", timeout=60) as r:
        nodes = json.loads(r.read())
    t = template(family)
    for node_id, node in t["workflow"].items():
        spec = nodes[node["class_type"]]["input"]
        known = {**spec.get("required", {}), **spec.get("optional", {})}
        assert set(node["inputs"]) <= set(known), (node_id, set(node["inputs"]) - set(known))
        for name, value in node["inputs"].items():  # fixed choices, e.g. DualCLIPLoader's type
            if value is not None and not isinstance(value, list) and isinstance(known[name][0], list):
                assert value in known[name][0], (node_id, name, value)
    sampler = next(n for n in t["workflow"].values() if n["class_type"] == "KSampler")
    ksampler = nodes["KSampler"]["input"]["required"]
    assert t["defaults"]["sampler"] in ksampler["sampler_name"][0]
    assert t["defaults"]["scheduler"] in ksampler["scheduler"][0]
    assert set(sampler["inputs"]) == set(ksampler)
