"""`python -m jobs.make_tiny_model` and `python -m jobs.edit` end to end on tiny random
checkpoints (PNG inputs, LCM, a real DragBench sample, bad inputs with their exact outcome),
and the drawing helpers in model/drawing.py. One run of each job is a real subprocess (its exit
status and output as a user sees them); the others call the job's main() in this process, which
is the same code without a process start (about 7 s each for a job importing diffusers)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs import edit as edit_job
from jobs import make_tiny_model as make_job
from model.drawing import draw_drag, side_by_side
from model.pipeline import DragEditPipeline
from schemas.coords import scale_points
from schemas.dragbench import load_sample
from tests.conftest import REPO

W, H = 96, 80
DRAG = "20,20->30,25; 60,50->50,40"
HANDLES = [[20.0, 20.0], [60.0, 50.0]]
TARGETS = [[30.0, 25.0], [50.0, 40.0]]
DRAGBENCH = REPO / "tests" / "fixtures" / "dragbench" / "animals" / "JH_2023-09-14-1823-59"
LAYOUT_FILES = [
    "stable-diffusion-inpainting/unet/config.json",
    "IP-Adapter/models/ip-adapter_sd15.bin",
    "IP-Adapter/models/image_encoder/config.json",
    "lightning-drag-sd15/appearance_encoder/config.json",
    "lightning-drag-sd15/appearance_encoder/diffusion_pytorch_model.safetensors",
    "lightning-drag-sd15/point_embedding/point_embedding.pt",
    "lightning-drag-sd15/lightning-drag-sd15-attn.bin",
    "lcm-lora-sdv1-5/pytorch_lora_weights.safetensors",
]


def run_job(name, *args, timeout=120):
    # One intra-op thread: the models are tiny, and on a busy 2-core machine torch's thread
    # pool makes a 0.1 s edit take 15 s (measured).
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", f"jobs.{name}", *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def run_main(capsys, job, *args):
    """`job.main(args)` in this process: (exit status, stdout, stderr), as run_job returns
    them. Use with the `one_thread` fixture."""
    capsys.readouterr()
    code = job.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def job_checkpoints(tmp_path_factory):
    """What `python -m jobs.make_tiny_model` writes (the LCM test edits with it)."""
    out = tmp_path_factory.mktemp("made") / "ckpt"
    code, stdout, stderr = run_job("make_tiny_model", "--out", out, "--seed", 3)
    assert code == 0, stderr
    return out, stdout


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("inputs")
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([x * 255 // W, y * 255 // H, np.full_like(x, 90)], axis=2).astype(np.uint8)
    image[30:60, 40:70] = (230, 200, 40)
    mask = np.zeros((H, W), np.uint8)
    mask[10:70, 10:86] = 255
    Image.fromarray(image).save(d / "image.png")
    Image.fromarray(mask).save(d / "mask.png")
    return d / "image.png", d / "mask.png"


def explicit_flags(root: Path) -> list:
    return ["--model-dir", root / "lightning-drag-sd15", "--base",
            root / "stable-diffusion-inpainting", "--ip-adapter", root / "IP-Adapter" / "models"]


# --- make_tiny_model --------------------------------------------------------------------------

def test_make_tiny_model_writes_the_public_layout(job_checkpoints):
    out, stdout = job_checkpoints
    for rel in LAYOUT_FILES:
        assert (out / rel).is_file(), rel
    printed = dict(line.split(": ", 1) for line in stdout.strip().splitlines())
    assert printed == {"base": str(out / "stable-diffusion-inpainting"),
                       "ip_adapter": str(out / "IP-Adapter" / "models"),
                       "model_dir": str(out / "lightning-drag-sd15"),
                       "lcm_lora": str(out / LAYOUT_FILES[-1]),
                       "vae": str(out / "stable-diffusion-inpainting" / "vae")}


def test_make_tiny_model_refuses_a_non_empty_dir(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    code, stdout, stderr = run_job("make_tiny_model", "--out", tmp_path)
    assert code == 2
    assert last_line(stderr) == (f"error: --out {tmp_path} exists and is not empty; "
                                 "pass --force to write into it")
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"] and stdout == ""


def test_make_tiny_model_force_writes_into_a_non_empty_dir(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert make_job.main(["--out", str(tmp_path), "--force", "--fusion", "midup"]) == 0
    for rel in LAYOUT_FILES:
        assert (tmp_path / rel).is_file(), rel
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert f"model_dir: {tmp_path / 'lightning-drag-sd15'}" in capsys.readouterr().out


def test_make_tiny_model_refuses_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert make_job.main(["--out", str(tmp_path / "file")]) == 2
    assert last_line(capsys.readouterr().err) == (f"error: --out {tmp_path / 'file'} exists and "
                                                  "is not a directory")


def test_make_tiny_model_writes_a_small_pixel_space_world_model(tmp_path, capsys):
    out = tmp_path / "pixel"
    assert make_job.main(["--out", str(out), "--resolution", "32", "--pixel-vae-factor", "4",
                          "--block-out-channels", "16,32", "--prediction-type", "sample"]) == 0
    pipe = DragEditPipeline.from_pretrained(str(out / "lightning-drag-sd15"),
                                            str(out / "stable-diffusion-inpainting"),
                                            str(out / "IP-Adapter" / "models"))
    assert pipe.resolution == (32, 32) and pipe.vae_factor == 4
    assert pipe.model.unet.config.block_out_channels == [16, 32]
    assert pipe.scheduler_config["prediction_type"] == "sample"
    capsys.readouterr()
    assert make_job.main(["--out", str(tmp_path / "odd"), "--resolution", "36",
                          "--pixel-vae-factor", "4", "--block-out-channels", "16,32"]) == 2
    assert last_line(capsys.readouterr().err) == (
        "error: resolution 36 is not a multiple of the model's 8 pixels per UNet cell")


# --- edit: successful runs --------------------------------------------------------------------

def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_edit_png_two_candidates(checkpoints, inputs, tmp_path):
    image, mask = inputs
    out = tmp_path / "out"
    code, stdout, stderr = run_job("edit", "--image", image, "--mask", mask, "--drag", DRAG,
                                   "--out", out, *explicit_flags(checkpoints), "--steps", 2,
                                   "--candidates", 2, "--prompt", "a photo of a cat")
    assert code == 0, stderr
    assert sorted(os.listdir(out)) == ["edit.json", "edited.png", "edited_1.png",
                                       "side_by_side.png"]
    # 96x80 runs at the tiny model's area (64x64, multiples of 64) and comes back at that size.
    edited = [read_png(out / "edited.png"), read_png(out / "edited_1.png")]
    for im in edited:
        assert im.shape == (64, 64, 3) and im.dtype == np.uint8
    assert not np.array_equal(edited[0], edited[1])  # candidate k is seeded with seed + k
    panel = read_png(out / "side_by_side.png")
    assert panel.shape[1] == 3 * 64 + 2 * 4 and panel.shape[0] > 64  # a label strip on top
    np.testing.assert_array_equal(panel[-64:, 64 + 4:2 * 64 + 4], edited[0])

    record = json.loads((out / "edit.json").read_text())
    assert record["result"]["unet_calls"] == 2
    assert record["result"]["appearance_calls"] == 1
    assert record["result"]["unet_samples"] == 2 * 2 * 2  # steps x (uncond, cond) x candidates
    assert record["result"]["seconds"] > 0
    assert record["inputs"]["handles"] == HANDLES and record["inputs"]["targets"] == TARGETS
    assert record["inputs"]["image"] == str(image) and record["inputs"]["mask"] == str(mask)
    assert record["inputs"]["size"] == [W, H] and record["inputs"]["prompt"] == "a photo of a cat"
    assert record["checkpoints"]["lcm_lora"] is None
    settings = record["settings"]
    assert (settings["scheduler"], settings["steps"], settings["candidates"]) == ("ddim", 2, 2)
    assert (settings["resolution"], settings["device"], settings["dtype"]) == ([64, 64], "cpu", "fp32")
    assert (settings["guidance"], settings["resize_back"]) == (4.0, False)
    outputs = record["outputs"]
    assert outputs["size"] == [64, 64]
    assert outputs["handles"] == scale_points(HANDLES, (W, H), (64, 64)).tolist()
    assert outputs["targets"] == scale_points(TARGETS, (W, H), (64, 64)).tolist()
    vae = checkpoints / "stable-diffusion-inpainting" / "vae"
    assert record["checkpoints"]["vae"] == str(vae)
    assert last_line(stdout).startswith("edited 2 candidate(s) at 64x64 in ")
    assert last_line(stdout).endswith(f" s, 2 UNet calls (VAE {vae}) -> {out}")


def test_edit_lcm_with_the_job_made_checkpoints(job_checkpoints, inputs, tmp_path, capsys,
                                                 one_thread):
    root, _ = job_checkpoints
    image, mask = inputs
    out = tmp_path / "out"
    code, stdout, stderr = run_main(capsys, edit_job, "--image", image, "--mask", mask,
                                    "--drag", DRAG, "--out", out, "--checkpoints", root,
                                    "--scheduler", "lcm", "--steps", 2)
    assert code == 0, stderr
    assert read_png(out / "edited.png").shape == (64, 64, 3)
    assert not (out / "edited_1.png").exists()
    record = json.loads((out / "edit.json").read_text())
    assert record["settings"]["scheduler"] == "lcm" and record["settings"]["steps"] == 2
    assert record["settings"]["guidance"] == 3.0  # the release's LCM default
    assert record["checkpoints"]["lcm_lora"] == str(root / LAYOUT_FILES[-1])
    assert record["checkpoints"]["base"] == str(root / "stable-diffusion-inpainting")
    assert record["result"]["unet_calls"] == 2 and record["result"]["appearance_calls"] == 1
    assert last_line(stdout).endswith(f" s, 2 UNet calls (VAE {record['checkpoints']['vae']}) "
                                      f"-> {out}")


def test_edit_dragbench_sample(checkpoints, tmp_path, capsys, one_thread):
    sample = load_sample(DRAGBENCH)
    h, w = sample.image.shape[:2]
    out = tmp_path / "out"
    code, stdout, stderr = run_main(capsys, edit_job, "--image", DRAGBENCH, "--out", out,
                                    "--checkpoints", checkpoints, "--steps", 2,
                                    "--resolution", 64, "--keep-unmasked", "--resize-back")
    assert code == 0, stderr
    edited = read_png(out / "edited.png")
    assert edited.shape == (h, w, 3)
    outside = sample.mask == 0
    assert np.array_equal(edited[outside], sample.image[outside])  # --keep-unmasked
    assert not np.array_equal(edited, sample.image)
    record = json.loads((out / "edit.json").read_text())
    assert record["settings"]["keep_unmasked"] is True and record["outputs"]["size"] == [w, h]
    assert record["inputs"]["dragbench_sample"] is True and record["inputs"]["mask"] is None
    assert record["inputs"]["size"] == [w, h] and record["inputs"]["prompt"] == sample.prompt
    assert record["inputs"]["handles"] == sample.handles.tolist()
    assert record["inputs"]["targets"] == sample.targets.tolist()
    assert record["settings"]["resolution"] == [64, 64]
    assert record["result"]["unet_calls"] == 2
    assert read_png(out / "side_by_side.png").shape[1] == 2 * w + 4


def test_edit_a_photo_at_the_release_size_and_at_a_chosen_one(tmp_path, capsys, one_thread):
    # A model of 512 px (multiples of 64, as SD-1.5): a 1280x853 photo runs at 640x448 and
    # comes back at that size, with the drag mapped into its pixels by the half-pixel rule.
    root = tmp_path / "ck512"
    code, _, stderr = run_main(capsys, make_job, "--out", root, "--resolution", 512)
    assert code == 0, stderr
    rng = np.random.default_rng(0)
    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(rng.integers(0, 256, (853, 1280, 3), dtype=np.uint8)).save(photo)
    editable = np.zeros((853, 1280), np.uint8)
    editable[200:700, 300:1000] = 255
    Image.fromarray(editable).save(mask)
    drag = "400,300->600,450; 901,650->820,600"
    out = tmp_path / "out"
    code, stdout, stderr = run_main(capsys, edit_job, "--image", photo, "--mask", mask,
                                    "--drag", drag, "--out", out, "--checkpoints", root,
                                    "--steps", 1, "--schedule", "none")
    assert code == 0, stderr
    assert read_png(out / "edited.png").shape == (448, 640, 3)
    record = json.loads((out / "edit.json").read_text())
    assert record["settings"]["resolution"] == record["outputs"]["size"] == [640, 448]
    handles = scale_points([[400, 300], [901, 650]], (1280, 853), (640, 448))
    assert record["outputs"]["handles"] == handles.tolist()
    assert record["outputs"]["handles"][0] == [(400.5) / 2 - 0.5, (300.5) * 448 / 853 - 0.5]
    assert " at 640x448 in " in last_line(stdout)

    code, _, stderr = run_main(capsys, edit_job, "--image", photo, "--mask", mask, "--drag",
                               drag, "--out", tmp_path / "wide", "--checkpoints", root,
                               "--steps", 1, "--schedule", "none", "--resolution", "256x128")
    assert code == 0, stderr
    assert read_png(tmp_path / "wide" / "edited.png").shape == (128, 256, 3)
    code, _, stderr = run_main(capsys, edit_job, "--image", photo, "--mask", mask, "--drag",
                               drag, "--out", tmp_path / "bad", "--checkpoints", root,
                               "--resolution", "100x64")
    assert code == 2
    assert last_line(stderr) == "error: resolution 100x64 must be positive multiples of 64"


def test_edit_takes_the_release_vae_from_the_checkpoints_root(job_checkpoints, inputs, tmp_path,
                                                              capsys, one_thread):
    from model.tiny_base import save_tiny_vae

    root = tmp_path / "ck"
    shutil.copytree(job_checkpoints[0], root)
    image, mask = inputs
    args = ["--image", image, "--mask", mask, "--drag", DRAG, "--checkpoints", root,
            "--steps", 1]
    code, _, stderr = run_main(capsys, edit_job, *args, "--out", tmp_path / "base-vae")
    assert code == 0, stderr
    save_tiny_vae(str(root / "sd-vae-ft-mse"), seed=9)  # another VAE: another edit
    code, stdout, stderr = run_main(capsys, edit_job, *args, "--out", tmp_path / "mse")
    assert code == 0, stderr
    record = json.loads((tmp_path / "mse" / "edit.json").read_text())
    assert record["checkpoints"]["vae"] == str(root / "sd-vae-ft-mse")
    assert f"(VAE {root / 'sd-vae-ft-mse'})" in last_line(stdout)
    assert not np.array_equal(read_png(tmp_path / "mse" / "edited.png"),
                              read_png(tmp_path / "base-vae" / "edited.png"))


# --- edit: bad inputs -------------------------------------------------------------------------

def test_edit_point_outside_the_image(checkpoints, inputs, tmp_path, capsys):
    image, mask = inputs
    code, _, stderr = run_main(capsys, edit_job, "--image", image, "--mask", mask, "--drag",
                               "20,20->30,25; 60,50->300,25", "--out", tmp_path / "out",
                               "--checkpoints", checkpoints)
    assert code == 2
    line = last_line(stderr)
    assert line.startswith("error: target point 1 ") and "x=300, y=25" in line
    assert line.endswith(f"outside the {W}x{H} image")
    assert not (tmp_path / "out").exists()


def test_edit_point_outside_the_mask(checkpoints, inputs, tmp_path, capsys):
    image, mask = inputs
    code, _, stderr = run_main(capsys, edit_job, "--image", image, "--mask", mask, "--drag",
                               "5,5->30,25", "--out", tmp_path / "out", "--checkpoints",
                               checkpoints)
    assert code == 2
    assert last_line(stderr) == ("error: handle point 0 (5, 5) is outside the mask; handles and "
                                 "targets must lie in the editable region")
    assert not (tmp_path / "out").exists()


def test_edit_malformed_drag(checkpoints, inputs, tmp_path, capsys):
    image, mask = inputs
    code, _, stderr = run_main(capsys, edit_job, "--image", image, "--mask", mask, "--drag",
                               "20,20->30,25; 40,30-50,40", "--out", tmp_path / "out",
                               "--checkpoints", checkpoints)
    assert code == 2
    assert last_line(stderr) == "error: --drag: drag pair 1 '40,30-50,40' is not 'x0,y0->x1,y1'"
    assert not (tmp_path / "out").exists()


def test_edit_drag_with_a_dragbench_folder(checkpoints, tmp_path, capsys):
    code, _, stderr = run_main(capsys, edit_job, "--image", DRAGBENCH, "--drag", "1,1->2,2",
                               "--out", tmp_path / "out", "--checkpoints", checkpoints)
    assert code == 2
    assert last_line(stderr) == (f"error: --drag cannot be used with a DragBench sample folder "
                                 f"({DRAGBENCH} provides its own mask and points)")
    assert not (tmp_path / "out").exists()


def test_edit_missing_checkpoints_dir(inputs, tmp_path, capsys):
    image, mask = inputs
    missing = tmp_path / "no-such-checkpoints"
    code, _, stderr = run_main(capsys, edit_job, "--image", image, "--mask", mask, "--drag",
                               DRAG, "--out", tmp_path / "out", "--checkpoints", missing)
    assert code == 2
    assert last_line(stderr) == f"error: --checkpoints {missing}: not a directory"
    assert not (tmp_path / "out").exists()


# The same entry point in-process, for the usage errors that need no subprocess of their own.
@pytest.mark.parametrize("case, message", [
    ("no-mask", "error: --mask required with an image file (only a DragBench sample folder "
                "brings its own)"),
    ("mask-with-dragbench", "error: --mask cannot be used with a DragBench sample folder "
                            f"({DRAGBENCH} provides its own mask and points)"),
    ("no-checkpoints", "error: no checkpoints: give --checkpoints ROOT, or all of --model-dir, "
                       "--base and --ip-adapter (missing --base, --ip-adapter)"),
    ("missing-model-dir", "error: --model-dir {root}/nowhere: not a directory"),
    ("lcm-without-lora", "error: --scheduler lcm needs an LCM-LoRA: give --lcm-lora FILE or "
                         "--checkpoints ROOT"),
    ("missing-lora", "error: --lcm-lora {root}/nothing.safetensors: file not found"),
    ("missing-image", "error: --image {root}/none.png: file not found"),
    ("mask-size", f"error: mask is 10x10 but the image is {W}x{H}"),
    ("image-dir", "error: --image {root} is a directory without meta_data.pkl, not a DragBench "
                  "sample"),
    ("out-is-a-file", "error: --out {root}/small.png exists and is not a directory"),
])
def test_edit_usage_errors(case, message, checkpoints, inputs, tmp_path, capsys):
    image, mask = inputs
    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small)
    base = ["--out", tmp_path / "out"]
    png = ["--image", image, "--mask", mask, "--drag", DRAG]
    flags = explicit_flags(checkpoints)
    argv = {
        "no-mask": ["--image", image, "--drag", DRAG, "--checkpoints", checkpoints],
        "mask-with-dragbench": ["--image", DRAGBENCH, "--mask", mask, "--checkpoints",
                                checkpoints],
        "no-checkpoints": [*png, *flags[:2]],
        "missing-model-dir": [*png, "--checkpoints", checkpoints, "--model-dir",
                              tmp_path / "nowhere"],
        "lcm-without-lora": [*png, *flags, "--scheduler", "lcm"],
        "missing-lora": [*png, "--checkpoints", checkpoints, "--lcm-lora",
                         tmp_path / "nothing.safetensors"],
        "missing-image": ["--image", tmp_path / "none.png", "--mask", mask, "--drag", DRAG,
                          "--checkpoints", checkpoints],
        "mask-size": ["--image", image, "--mask", small, "--drag", "1,1->2,2", "--checkpoints",
                      checkpoints],
        "image-dir": ["--image", tmp_path, "--checkpoints", checkpoints],
        "out-is-a-file": [*png, "--checkpoints", checkpoints, "--out", small],
    }[case]
    assert edit_job.main([str(a) for a in [*base, *argv]]) == 2
    assert last_line(capsys.readouterr().err) == message.format(root=tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--candidates", "-1"], ["--schedule", "x"],
                                  ["--fusion", "down"], ["--resolution", "640x"],
                                  ["--resolution", "0x64"], ["--resolution", "64x64x3"], []])
def test_edit_bad_flags_exit_2(argv, capsys):
    required = [] if not argv else ["--image", "i.png", "--out", "o"]
    with pytest.raises(SystemExit) as e:
        edit_job.main(required + argv)
    assert e.value.code == 2
    assert "error: " in capsys.readouterr().err


# --- model/drawing.py -------------------------------------------------------------------------

def test_draw_drag_marks_handles_and_targets_only():
    image = np.full((64, 64, 3), 128, np.uint8)
    handles, targets = np.array([[10.0, 12.0]]), np.array([[40.0, 30.0]])
    drawn = draw_drag(image, handles, targets)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    r, g, b = drawn[12, 10].astype(int)
    assert r > 200 and r > g + 100 and r > b + 100        # red handle dot
    r, g, b = drawn[30, 40].astype(int)
    assert b > 200 and b > r + 100 and b > g + 100        # blue target dot
    mid = drawn[21, 25].astype(int)                        # on the arrow between them
    assert not np.array_equal(mid, [128, 128, 128])
    np.testing.assert_array_equal(drawn[60, 2], [128, 128, 128])  # far away: untouched
    np.testing.assert_array_equal(image, 128)              # the input is not modified


def test_draw_drag_scales_and_dims_outside_the_mask():
    image = np.full((512, 512, 3), 200, np.uint8)
    mask = np.zeros((512, 512), np.uint8)
    mask[100:400, 100:400] = 1
    drawn = draw_drag(image, [[150, 150]], [[300, 300]], mask)
    assert (drawn[146:155, 146:155, 0] > 200).all()       # the dot is several pixels wide here
    assert np.array_equal(drawn[300, 300], [0, 0, 255])
    assert (drawn[10, 10] < 200).all()                     # outside the mask: darkened
    np.testing.assert_array_equal(drawn[380, 120], [200, 200, 200])  # inside, far: untouched


def test_side_by_side_sizes():
    a = np.zeros((40, 30, 3), np.uint8)
    b = np.zeros((64, 50, 3), np.uint8)
    c = np.zeros((10, 5, 3), np.uint8)
    out = side_by_side([a, b, c], gap=4)
    assert out.shape == (64, 30 + 50 + 5 + 2 * 4, 3)
    assert (out[:, 30:34] == 255).all()                    # white gap
    assert (out[40:, :30] == 255).all()                    # padded to the tallest on white
    assert (out[:64, 34:84] == 0).all()
    labelled = side_by_side([a, b], labels=["source", "edited"], gap=2)
    assert labelled.shape[1] == 82 and labelled.shape[0] > 64
    assert (labelled[: labelled.shape[0] - 64] < 128).any()  # some dark label text on top
    np.testing.assert_array_equal(labelled[-64:, 32:], b)
