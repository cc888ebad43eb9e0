"""One job on a ComfyUI backend: submit, follow, fetch; interrupt it if the caller goes away.

ComfyUI is a black box here that speaks ``POST /prompt``, the ``/ws`` event socket,
``GET /history/<id>``, ``GET /view``, ``POST /interrupt`` and ``POST /queue``. The socket is
opened before the prompt is queued (with the same client id), so no event of this job is
missed; it reports progress, the end of the job, and errors.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from hal0.errors import SlotBackendError, SlotInterrupted, SlotUnreachable

__all__ = ["ComfyImage", "Progress", "run_job"]

MAX_IMAGE_BYTES = 64 << 20  # one image from ComfyUI (a 2048x2048 RGBA PNG is at most 16 MB)

Progress = Callable[[str, int, int], None]  # (prompt id, step, steps)


@dataclass(frozen=True)
class ComfyImage:
    data: bytes
    filename: str
    subfolder: str
    type: str


def _rejected(slot: str, body: Any) -> SlotBackendError:
    """ComfyUI's 400 for a prompt it will not run: the first failing node and its message."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    node_errors = body.get("node_errors", {}) if isinstance(body, dict) else {}
    node_id, node_type, message = None, None, error.get("message") or "ComfyUI rejected the workflow"
    for nid, info in (node_errors or {}).items():
        node_id, node_type = nid, info.get("class_type")
        errs = info.get("errors") or []
        if errs:
            message = f"{errs[0].get('message', '')}: {errs[0].get('details', '')}".strip(": ")
        break
    return SlotBackendError(f"ComfyUI rejected the workflow at node {node_id} ({node_type}): {message}"
                            if node_id else f"ComfyUI rejected the workflow: {message}",
                            slot=slot, stage="validation", node_id=node_id, node_type=node_type,
                            comfyui_message=message, comfyui_error=error.get("type"))


def _failed(slot: str, data: dict[str, Any]) -> SlotBackendError:
    message = str(data.get("exception_message", "")).strip()
    return SlotBackendError(
        f"ComfyUI failed at node {data.get('node_id')} ({data.get('node_type')}): {message}", slot=slot,
        stage="execution", node_id=data.get("node_id"), node_type=data.get("node_type"), comfyui_message=message,
        exception_type=data.get("exception_type"))


async def _cancel(session: aiohttp.ClientSession, base_url: str, prompt_id: str) -> None:
    """Take the prompt out of the queue, and stop it if it is the one running."""
    for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
        try:
            async with session.post(base_url + path, json=body, timeout=aiohttp.ClientTimeout(total=5)):
                pass
        except (aiohttp.ClientError, OSError, TimeoutError):
            return  # the backend is gone: nothing left to stop


async def run_job(session: aiohttp.ClientSession, base_url: str, slot: str, graph: dict[str, Any], output: str,
                  progress: Progress) -> tuple[str, list[ComfyImage]]:
    """Run ``graph`` and return its prompt id and the images of node ``output``.

    Raises SlotUnreachable (ComfyUI not answering, or gone mid-job), SlotBackendError (it
    rejected the workflow or a node failed) or SlotInterrupted. Cancelling the caller removes
    the prompt from ComfyUI's queue or interrupts it.
    """
    client_id = uuid.uuid4().hex
    gone = f"slot {slot} (ComfyUI)"
    try:
        ws = await session.ws_connect(f"{base_url}/ws?clientId={client_id}", heartbeat=30, max_msg_size=0)
    except (aiohttp.ClientError, OSError) as e:
        raise SlotUnreachable(f"{gone} did not answer: {e}", slot=slot) from None
    prompt_id: str | None = None
    try:
        try:
            async with session.post(f"{base_url}/prompt", json={"prompt": graph, "client_id": client_id}) as r:
                body = await r.json(content_type=None)
                if r.status == 400:
                    raise _rejected(slot, body)
                if r.status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
                    raise SlotBackendError(f"ComfyUI answered /prompt with {r.status}", slot=slot, stage="submit",
                                           comfyui_body=body)
                prompt_id = str(body["prompt_id"])
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise SlotUnreachable(f"{gone} failed to take the job: {e}", slot=slot) from None
        await _follow(ws, slot, prompt_id, progress)
        return prompt_id, await _fetch(session, base_url, slot, prompt_id, output)
    except asyncio.CancelledError:
        if prompt_id is not None:
            await asyncio.shield(_cancel(session, base_url, prompt_id))
        raise
    finally:
        await ws.close()


async def _follow(ws: aiohttp.ClientWebSocketResponse, slot: str, prompt_id: str, progress: Progress) -> None:
    """Read the event socket until this prompt finished, failed or was interrupted."""
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue  # binary frames are previews
        try:
            event = json.loads(msg.data)
            kind, data = event["type"], event.get("data") or {}
        except (ValueError, KeyError, TypeError):
            continue
        if data.get("prompt_id") != prompt_id:
            continue
        if kind == "progress":
            progress(prompt_id, int(data.get("value", 0)), int(data.get("max", 0)))
        elif kind == "executing" and data.get("node") is None:
            return  # sent once the history is written (execution_success comes before that)
        elif kind == "execution_error":
            raise _failed(slot, data)
        elif kind == "execution_interrupted":
            raise SlotInterrupted(f"ComfyUI interrupted the job at node {data.get('node_id')}", slot=slot,
                                  node_id=data.get("node_id"), node_type=data.get("node_type"))
    raise SlotUnreachable(f"slot {slot} (ComfyUI) went away before the job finished", slot=slot,
                          prompt_id=prompt_id)


async def _fetch(session: aiohttp.ClientSession, base_url: str, slot: str, prompt_id: str,
                 output: str) -> list[ComfyImage]:
    try:
        async with session.get(f"{base_url}/history/{prompt_id}") as r:
            history = await r.json(content_type=None)
        images = history[prompt_id]["outputs"][output]["images"]
        out = []
        for image in images:
            params = {"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                      "type": image.get("type", "output")}
            async with session.get(f"{base_url}/view", params=params) as r:
                if r.status != 200:
                    raise SlotBackendError(f"ComfyUI could not hand over {image['filename']} ({r.status})",
                                           slot=slot, stage="fetch")
                parts, size = [], 0
                async for part in r.content.iter_chunked(1 << 20):  # never more than the cap in memory
                    size += len(part)
                    if size > MAX_IMAGE_BYTES:
                        raise SlotBackendError(f"ComfyUI's image {image['filename']} is over "
                                               f"{MAX_IMAGE_BYTES >> 20} MB", slot=slot, stage="fetch")
                    parts.append(part)
                out.append(ComfyImage(b"".join(parts), params["filename"], params["subfolder"], params["type"]))
        return out
    except (aiohttp.ClientError, OSError) as e:
        raise SlotUnreachable(f"slot {slot} (ComfyUI) went away while handing over the images: {e}",
                              slot=slot) from None
    except (KeyError, TypeError, ValueError):
        raise SlotBackendError(f"ComfyUI's history has no images for prompt {prompt_id}", slot=slot,
                               stage="fetch", prompt_id=prompt_id) from None
