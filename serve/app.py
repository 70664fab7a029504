"""The drag-editing service: a Ray Serve deployment with a FastAPI ingress.

  POST /v1/edit    multipart form: image (PNG/JPEG file), mask (PNG file, optional: absent
                   means the whole image is editable), handles and targets (JSON lists of
                   [x, y] in the image's pixels), and optional prompt, scheduler (ddim|lcm),
                   steps, guidance, schedule, seed, candidates, sequential, keep_unmasked,
                   resize_back (true|false). Answers JSON: the candidates as base64 PNGs, their
                   size (by default the release's size rule: about the model resolution's area
                   with the image's aspect ratio; resize_back: the image's size), the drag in
                   their pixels, the settings that ran and the timings (the backbone batch's
                   seconds and size). A bad field is a 4xx JSON {"field", "error"}.
  GET  /v1/health  {"status": "ok"}
  GET  /v1/model   what is loaded: checkpoints, resolution, device, dtype, schedulers,
                   the request limits and the batching settings
  GET  /           the browser UI (serve/ui/index.html)
  GET  /docs       the OpenAPI page

Concurrent requests on a replica are batched across users (`serve.batch`, up to
`max_batch_size` edits, waiting at most `batch_wait_s` for more); requests that can share a
backbone batch run as one (serve.editor). Replicas scale with `num_replicas` or an
autoscaling config (`build_app`).
"""
# No `from __future__ import annotations`: FastAPI reads the route methods' annotations (a
# `Request` parameter) at runtime, and through Serve's ingress class it cannot resolve strings.
import asyncio
import base64
import collections
import os
import time
from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve

from serve.editor import Editor
from serve.request import Limits, RequestError, read_request

UI_PAGE = os.path.join(os.path.dirname(__file__), "ui", "index.html")
FORM_FIELDS = ("handles", "targets", "prompt", "scheduler", "steps", "guidance", "schedule",
               "seed", "candidates", "sequential", "keep_unmasked", "resize_back")

api = FastAPI(title="dragvid drag editing",
              description="Drag-based image editing with a LightningDrag model (serve/app.py).")


@api.exception_handler(RequestError)
async def _bad_field(_request: Request, error: RequestError) -> JSONResponse:
    return JSONResponse({"field": error.field, "error": str(error)}, status_code=error.status)


async def _upload(form, name: str) -> bytes | None:
    part = form.get(name)
    if part is None or part == "":
        return None
    if isinstance(part, str):
        raise RequestError(name, "expected a file upload (multipart/form-data), got a text field")
    return await part.read()


@serve.deployment(ray_actor_options={"num_cpus": 1})
@serve.ingress(api)
class DragEditService:
    def __init__(self, paths: dict, device: str = "cpu", dtype: str = "fp32",
                 fusion: str | None = None, limits: dict | None = None,
                 max_batch_size: int = 8, batch_wait_s: float = 0.02):
        self.editor = Editor.load(paths, device=device, dtype=dtype, fusion=fusion)
        self.limits = Limits(**(limits or {}))
        self.batching = {"max_batch_size": max_batch_size, "batch_wait_s": batch_wait_s}
        self.edit_batched.set_max_batch_size(max_batch_size)
        self.edit_batched.set_batch_wait_timeout_s(batch_wait_s)
        self.batch_sizes: collections.Counter = collections.Counter()
        with open(UI_PAGE, encoding="utf-8") as f:
            self.ui_page = f.read()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def edit_batched(self, requests: list) -> list:
        self.batch_sizes[len(requests)] += 1
        # the model runs in a thread: the replica keeps answering (health, new requests)
        return await asyncio.to_thread(self.editor.edit_many, requests)

    @api.get("/v1/health")
    def health(self) -> dict:
        return {"status": "ok"}

    @api.get("/v1/model")
    def model(self) -> dict:
        return {**self.editor.info(), "limits": asdict(self.limits), "batching": self.batching,
                "batches_formed": {str(k): v for k, v in sorted(self.batch_sizes.items())}}

    @api.get("/", response_class=HTMLResponse)
    def page(self) -> str:
        return self.ui_page

    @api.post("/v1/edit")
    async def edit(self, request: Request) -> dict:
        started = time.perf_counter()
        length = int(request.headers.get("content-length") or 0)
        most = 2 * self.limits.max_upload_bytes + (1 << 20)
        if length > most:
            raise RequestError("request", f"{length} bytes, over the limit of {most} bytes",
                               status=413)
        try:
            form = await request.form(max_files=2, max_fields=len(FORM_FIELDS),
                                      max_part_size=self.limits.max_upload_bytes)
        except Exception as e:   # starlette's MultiPartException and the parser's own
            raise RequestError("request", f"not a readable multipart form ({e})") from None
        unknown = sorted(set(form) - set(FORM_FIELDS) - {"image", "mask"})
        if unknown:
            raise RequestError(unknown[0], f"unknown field; expected image, mask, "
                                           f"{', '.join(FORM_FIELDS)}")
        image = await _upload(form, "image")
        if image is None:
            raise RequestError("image", "missing: upload a PNG or JPEG file")
        values = {k: v for k, v in form.items() if k in FORM_FIELDS}
        for name, value in values.items():
            if not isinstance(value, str):
                raise RequestError(name, "expected a text field, got a file")
        parsed = read_request(image, await _upload(form, "mask"), values, self.limits,
                              self.editor.lcm)
        response = await self.edit_batched(parsed)
        return {"images": [base64.b64encode(b).decode() for b in response.images],
                "size": list(response.size), "handles": response.handles,
                "targets": response.targets, "settings": response.settings,
                "timings": {"seconds": time.perf_counter() - started,
                            "batch_seconds": response.seconds,
                            "batch_size": response.batch_size}}


def build_app(paths: dict, device: str = "cpu", dtype: str = "fp32", fusion: str | None = None,
              limits: dict | None = None, max_batch_size: int = 8, batch_wait_s: float = 0.02,
              num_replicas: int | str = 1, gpus_per_replica: float = 0,
              cpus_per_replica: float = 1, autoscaling: dict | None = None):
    """The Serve application: `serve.run(build_app(...))`. `autoscaling` (Serve's
    autoscaling_config: min_replicas, max_replicas, target_ongoing_requests, ...) replaces
    `num_replicas`."""
    scaling = {"autoscaling_config": autoscaling} if autoscaling else \
        {"num_replicas": num_replicas}
    return DragEditService.options(
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        **scaling).bind(paths, device, dtype, fusion, limits, max_batch_size, batch_wait_s)
