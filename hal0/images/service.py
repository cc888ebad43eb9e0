"""``POST /v1/images/generations`` on a ComfyUI slot: request -> workflow -> job -> OpenAI answer."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from hal0.config.schema import ImagesConfig
from hal0.errors import SlotNoModel
from hal0.events import EventBus
from hal0.images.cache import ImageCache
from hal0.images.comfy import ComfyImage, run_job
from hal0.images.request import ImageRequest
from hal0.images.workflows import build_workflow
from hal0.paths import Paths
from hal0.providers.comfyui import base_directory, layout
from hal0.slots import Slot
from hal0.web.http import REQUEST_ID, json_response

__all__ = ["FILES_PREFIX", "ImageService"]

FILES_PREFIX = "/v1/images/files/"


class ImageService:
    def __init__(self, paths: Paths, config: ImagesConfig, session: aiohttp.ClientSession, events: EventBus) -> None:
        self._paths, self._config, self._session, self._events = paths, config, session, events
        self.cache = ImageCache(paths.images_dir, config.cache_max_files, config.cache_max_mb * 1024 * 1024)

    def _base_url(self, request: web.Request) -> str:
        if self._config.public_url:
            return self._config.public_url.rstrip("/")
        return f"{request.scheme}://{request.host}"

    async def generate(self, request: web.Request, slot: Slot, req: ImageRequest) -> web.Response:
        model = slot.model
        if model is None:
            raise SlotNoModel(f"slot {slot.name} has no model", slot=slot.name)
        flow = build_workflow(layout(model), req, prefix=f"hal0/{uuid.uuid4().hex}")
        rid = request[REQUEST_ID]

        def progress(prompt_id: str, step: int, steps: int) -> None:
            self._events.publish("image.progress", {"slot": slot.name, "request_id": rid, "prompt_id": prompt_id,
                                                    "step": step, "steps": steps})

        started = time.monotonic()
        prompt_id, images = await run_job(self._session, slot.base_url, slot.name, flow.graph, flow.output, progress)
        self._discard(slot, images)
        data: list[dict[str, Any]] = []
        for image in images:
            if req.response_format == "b64_json":
                data.append({"b64_json": base64.b64encode(image.data).decode()})
            else:
                name = await self.cache.put(image.data)
                data.append({"url": f"{self._base_url(request)}{FILES_PREFIX}{name}"})
        self._events.publish("image.done", {"slot": slot.name, "request_id": rid, "prompt_id": prompt_id,
                                            "images": len(data), "seconds": round(time.monotonic() - started, 3)})
        hal0 = {"slot": slot.name, "model": model.id, "prompt_id": prompt_id, **flow.settings}
        return json_response({"created": int(time.time()), "data": data, "output_format": "png", "_hal0": hal0},
                             headers={"X-Hal0-Slot": slot.name})

    def _discard(self, slot: Slot, images: list[ComfyImage]) -> None:
        """ComfyUI saved the images in its output folder; hal0 has them now, so they go."""
        out = (base_directory(self._paths.slot_state_dir(slot.name)) / "output").resolve()
        for image in images:
            if image.type != "output":
                continue
            f = (out / image.subfolder / image.filename).resolve()
            if f.is_relative_to(out):
                Path(f).unlink(missing_ok=True)
