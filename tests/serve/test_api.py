"""The drag-editing service as its users reach it: `python -m jobs.serve` joining the session's
Ray cluster with the tiny model (tests/serve/conftest.py), asked over HTTP (serve.client, and
raw requests for what a client would never send). A good request answers what `jobs.edit`
writes for the same inputs, byte for byte; every bad field is its own 4xx naming the field,
and the service keeps serving; concurrent requests are batched and each gets its own answer."""
from __future__ import annotations

import io
import json
import os
import threading

import numpy as np
import pytest
import requests
from PIL import Image

from serve.client import EditRefused, edit
from tests.conftest import one_torch_thread

HANDLES, TARGETS = [[150.0, 50.0], [60.0, 40.0]], [[170.0, 55.0], [70.0, 30.0]]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def jobs_edit(tmp_path, inputs, tiny_checkpoints, *args) -> list[bytes]:
    """What `jobs.edit` writes for the same inputs (in this process, one intra-op thread as a
    replica runs: reductions are summed in the same order)."""
    from jobs import edit as edit_job

    out = tmp_path / "jobs-edit"
    drag = "; ".join(f"{h[0]},{h[1]}->{t[0]},{t[1]}" for h, t in zip(HANDLES, TARGETS))
    with one_torch_thread():
        assert edit_job.main(["--image", str(inputs["image"]), "--mask", str(inputs["mask"]),
                              "--drag", drag, "--checkpoints", str(tiny_checkpoints),
                              "--out", str(out), "--device", "cpu", *args]) == 0
    names = sorted(n for n in os.listdir(out) if n.startswith("edited"))
    return [(out / n).read_bytes() for n in names]


@pytest.mark.slow
@pytest.mark.ray
def test_health_model_and_docs(service):
    assert requests.get(f"{service}/v1/health", timeout=10).json() == {"status": "ok"}
    info = requests.get(f"{service}/v1/model", timeout=10).json()
    assert (info["resolution"], info["device"], info["dtype"], info["schedulers"]) == \
        ([64, 64], "cpu", "fp32", ["ddim"])
    assert info["limits"]["max_upload_bytes"] == 1 << 20 and info["limits"]["max_pixels"] == 300000
    assert info["batching"] == {"max_batch_size": 4, "batch_wait_s": 0.5}
    assert "/v1/edit" in requests.get(f"{service}/openapi.json", timeout=10).json()["paths"]
    assert requests.get(f"{service}/docs", timeout=10).status_code == 200
    page = requests.get(f"{service}/", timeout=10)
    assert page.status_code == 200 and 'id="overlay"' in page.text


@pytest.mark.slow
@pytest.mark.ray
def test_an_edit_equals_jobs_edit_byte_for_byte_at_the_images_aspect(
        service, inputs, tiny_checkpoints, tmp_path):
    answer = edit(service, inputs["image"], HANDLES, TARGETS, mask=inputs["mask"], steps=2,
                  candidates=2, seed=3)
    expected = jobs_edit(tmp_path, inputs, tiny_checkpoints, "--steps", "2", "--candidates",
                         "2", "--seed", "3")
    assert answer["images"] == expected
    assert answer["size"] == [128, 64]               # 3:1 kept as the release's size rule keeps it
    assert np.allclose(answer["handles"], np.array(HANDLES) * [128 / 300, 64 / 100]
                       + [128 / 300 / 2 - 0.5, 64 / 100 / 2 - 0.5])
    settings = answer["settings"]
    assert (settings["scheduler"], settings["steps"], settings["guidance"], settings["seed"],
            settings["candidates"]) == ("ddim", 2, 4.0, 3, 2)
    assert answer["timings"]["batch_size"] == 1

    back = edit(service, inputs["image"], HANDLES, TARGETS, mask=inputs["mask"], steps=2,
                seed=3, resize_back=True, keep_unmasked=True)
    image = np.asarray(Image.open(io.BytesIO(back["images"][0])))
    assert back["size"] == [300, 100] and image.shape == (100, 300, 3)
    outside = inputs["mask_array"] == 0
    assert np.array_equal(image[outside], inputs["photo"][outside])
    np.testing.assert_allclose(back["handles"], HANDLES)


def post(service, files=None, **data):
    return requests.post(f"{service}/v1/edit", files=files, data=data, timeout=120)


@pytest.mark.slow
@pytest.mark.ray
def test_every_bad_field_is_its_own_4xx_and_the_service_keeps_serving(service, inputs):
    image, mask = inputs["image"].read_bytes(), inputs["mask"].read_bytes()
    good = {"handles": json.dumps(HANDLES), "targets": json.dumps(TARGETS)}
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    gif = io.BytesIO()
    Image.fromarray(inputs["photo"]).save(gif, format="GIF")
    cases = [  # (files, form, status, field, message fragment)
        ({}, good, 422, "image", "missing"),
        ({"image": ("x.png", b"hello")}, good, 422, "image", "not an image"),
        ({"image": ("x.gif", gif.getvalue())}, good, 422, "image", "GIF image: expected PNG"),
        ({"image": ("x.png", png(noise))}, good, 413, "image", "over the limit of 1048576 bytes"),
        ({"image": ("x.png", png(np.zeros((600, 600, 3), np.uint8)))}, good, 413, "image",
         "600x600 pixels, over the limit of 300000"),
        ({"image": ("x.png", image), "mask": ("m.png", png(np.zeros((50, 50), np.uint8)))},
         good, 422, "mask", "50x50, but the image is 300x100"),
        ({"image": ("x.png", image)}, {**good, "handles": "[[1, 2"}, 422, "handles", "not JSON"),
        ({"image": ("x.png", image)}, {**good, "handles": "[[1, 2, 3]]"}, 422, "handles",
         "list of [x, y] pairs"),
        ({"image": ("x.png", image)}, {"handles": json.dumps(HANDLES)}, 422, "targets",
         "missing"),
        ({"image": ("x.png", image)}, {**good, "targets": json.dumps(TARGETS[:1])}, 422,
         "targets", "2 handles but 1 targets"),
        ({"image": ("x.png", image)}, {**good, "handles": "[[300, 50], [60, 40]]"}, 422,
         "handles", "handle point 0 (x=300, y=50) outside the 300x100 image"),
        ({"image": ("x.png", image), "mask": ("m.png", mask)},
         {**good, "targets": "[[170, 55], [5, 5]]"}, 422, "targets",
         "target point 1 (5, 5) is outside the mask"),
        ({"image": ("x.png", image)}, {**good, "steps": "0"}, 422, "steps", "out of range: 1..100"),
        ({"image": ("x.png", image)}, {**good, "steps": "101"}, 422, "steps", "out of range"),
        ({"image": ("x.png", image)}, {**good, "steps": "two"}, 422, "steps",
         "expected an integer"),
        ({"image": ("x.png", image)}, {**good, "candidates": "9"}, 422, "candidates",
         "out of range: 1..8"),
        ({"image": ("x.png", image)}, {**good, "guidance": "-1"}, 422, "guidance", "out of range"),
        ({"image": ("x.png", image)}, {**good, "scheduler": "euler"}, 422, "scheduler",
         "'euler' is not one of ddim, lcm"),
        ({"image": ("x.png", image)}, {**good, "scheduler": "lcm"}, 422, "scheduler",
         "lcm needs an LCM-LoRA"),
        ({"image": ("x.png", image)}, {**good, "schedule": "cosine"}, 422, "schedule",
         "not one of"),
        ({"image": ("x.png", image)}, {**good, "keep_unmasked": "maybe"}, 422, "keep_unmasked",
         "expected true or false"),
        ({"image": ("x.png", image)}, {**good, "colour": "red"}, 422, "colour", "unknown field"),
        ({"image": ("x.png", image), "handles": ("h.json", b"[[1, 1]]")},
         {"targets": json.dumps(TARGETS)}, 422, "handles", "expected a text field"),
    ]
    for files, form, status, field, fragment in cases:
        response = post(service, files=files, **form)
        body = response.json()
        assert (response.status_code, body.get("field")) == (status, field), (field, body)
        assert body["error"].startswith(f"{field}: ") and fragment in body["error"], body
    assert requests.get(f"{service}/v1/health", timeout=10).json() == {"status": "ok"}
    answer = edit(service, image, HANDLES, TARGETS, steps=1)   # no mask: all editable
    assert len(answer["images"]) == 1
    with pytest.raises(EditRefused) as refused:
        edit(service, image, HANDLES, TARGETS, steps=1000)
    assert (refused.value.status, refused.value.field) == (422, "steps")


@pytest.mark.slow
@pytest.mark.ray
def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(service, inputs):
    """Four users at once, each their own seed and guidance: one backbone batch, and each
    answer is what the same request alone gets (to a level: one batch sums in another
    order)."""
    image, mask = inputs["image"].read_bytes(), inputs["mask"].read_bytes()
    asks = [dict(seed=10 + k, guidance=2.0 + k, steps=2) for k in range(4)]
    answers: list = [None] * 4

    def ask(k):
        answers[k] = edit(service, image, HANDLES, TARGETS, mask=mask, **asks[k])

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert max(a["timings"]["batch_size"] for a in answers) > 1, \
        [a["timings"] for a in answers]
    for k, together in enumerate(answers):
        alone = edit(service, image, HANDLES, TARGETS, mask=mask, **asks[k])
        assert alone["timings"]["batch_size"] == 1
        a, b = (np.asarray(Image.open(io.BytesIO(x["images"][0]))).astype(int)
                for x in (together, alone))
        assert np.abs(a - b).max() <= 1, k
        assert together["settings"]["guidance"] == 2.0 + k
    formed = requests.get(f"{service}/v1/model", timeout=10).json()["batches_formed"]
    assert any(int(size) > 1 for size in formed), formed


@pytest.mark.slow
@pytest.mark.ray
def test_the_load_benchmark_runs_against_a_service(service, capsys):
    """bench/serve.py cannot rot: a short run against the running service."""
    from bench import serve as bench_serve

    assert bench_serve.main(["--url", service, "--requests", "4", "--clients", "2",
                             "--steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| one at a time | 4 |" in printed and "| 2 concurrent clients | 4 |" in printed
    assert "answers: 4 of 4, all equal to the requests alone" in printed


@pytest.mark.parametrize("argv, message", [
    (["--num-replicas", "2", "--autoscaling", "1-4"], "--num-replicas and --autoscaling: give one"),
    (["--port", "0"], "--port 0: expected 1..65535"),
    (["--device", "cuda"], "--device cuda needs --gpus-per-replica > 0 (the replicas' GPUs)"),
    (["--checkpoints", "/nonexistent/ckpt"], "--checkpoints /nonexistent/ckpt: not a directory"),
])
def test_bad_usage_exits_2_before_anything_starts(argv, message, capsys):
    from jobs import serve as serve_job

    assert serve_job.main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"
