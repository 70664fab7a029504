"""A client for the drag-editing service (`python -m jobs.serve`). Needs only `requests`.

    from serve.client import edit
    answer = edit("http://127.0.0.1:8000", "photo.jpg", handles=[[120, 80]],
                  targets=[[160, 80]], mask="mask.png", steps=8, candidates=2, seed=1)
    open("edited.png", "wb").write(answer["images"][0])

`image` and `mask` are paths or bytes (PNG or JPEG; the mask a PNG of the image's size,
nonzero = editable; none: the whole image). Settings are the API's form fields (prompt,
scheduler, steps, guidance, schedule, seed, candidates, sequential, keep_unmasked,
resize_back). Returns the API's answer with the images as PNG bytes; a refused request
raises EditRefused naming the field.
"""
from __future__ import annotations

import base64
import json

import requests


class EditRefused(Exception):
    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.field, self.message = status, field, message


def _content(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    with open(value, "rb") as f:
        return f.read()


def edit(url: str, image, handles, targets, mask=None, timeout: float = 300,
         **settings) -> dict:
    files = {"image": ("image", _content(image))}
    if mask is not None:
        files["mask"] = ("mask", _content(mask))
    data = {"handles": json.dumps([list(map(float, p)) for p in handles]),
            "targets": json.dumps([list(map(float, p)) for p in targets])}
    for name, value in settings.items():
        data[name] = str(value).lower() if isinstance(value, bool) else str(value)
    response = requests.post(f"{url.rstrip('/')}/v1/edit", files=files, data=data,
                             timeout=timeout)
    if response.status_code != 200:
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text}
        raise EditRefused(response.status_code, body.get("field"), body.get("error", ""))
    answer = response.json()
    answer["images"] = [base64.b64decode(b) for b in answer["images"]]
    return answer
