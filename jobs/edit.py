"""Drag-edit one image with a LightningDrag checkpoint.

  python -m jobs.edit --image IN --mask MASK --drag "x0,y0->x1,y1; ..." --out OUT
                      [--checkpoints ROOT | --model-dir D --base D --ip-adapter D]
                      [--lcm-lora FILE] [--vae D] [--fusion full|midup|up] [--prompt TEXT]
                      [--steps N] [--guidance G] [--schedule S] [--scheduler ddim|lcm]
                      [--seed N] [--candidates K] [--sequential K] [--resolution N|WxH]
                      [--resize-back] [--keep-unmasked] [--device cpu|cuda]
                      [--dtype fp32|fp16|bf16]
  python -m jobs.edit --image DRAGBENCH_SAMPLE_DIR --out OUT [options as above]

Points are pixel coordinates of IN: x right, y down, origin top-left, pixel centres at
integers; every handle and target must lie inside MASK (a PNG of IN's size, nonzero =
editable). IN may instead be a DragBench sample folder (holding meta_data.pkl): its image,
mask, points and prompt are used (--prompt overrides the prompt; --mask and --drag are refused).

--checkpoints ROOT names a directory in the public layout (as `python -m jobs.make_tiny_model`
writes): ROOT/lightning-drag-sd15, ROOT/stable-diffusion-inpainting (or
dreamshaper-8-inpainting), ROOT/IP-Adapter/models, ROOT/lcm-lora-sdv1-5, and the VAE the
release runs with, ROOT/sd-vae-ft-mse (or sd-vae-ft-ema; without either, the base model's own).
--model-dir, --base, --ip-adapter and --vae override its parts. The LCM-LoRA is loaded only
when --lcm-lora is given (then the scheduler defaults to lcm) or with --scheduler lcm (from
ROOT if not given). Defaults, as the public release's demo: ddim 25 steps at guidance 4.0,
lcm 8 steps at guidance 3.0, the inverse-square schedule; cuda when available.

Size: by default the edit runs as the release runs it, at about the model resolution's area
(512x512 for SD-1.5) with the input's aspect ratio, each side a multiple of 64 (a 1280x853
photo runs at 640x448), and the result is that size; --resolution N (square) or WxH sets the
size, --resize-back returns the result at the input's size. Points and mask are mapped with
the image (schemas.coords); edit.json records the size that ran and the drag in the result's
pixels.

OUT (a directory, created) receives edited.png (candidate 0), edited_<k>.png for further
candidates, side_by_side.png (the source with the drags drawn, then each candidate) and
edit.json (inputs, settings, timing and UNet counters). IN, MASK and OUT may be fsspec URLs
(s3://bucket/photo.png, a DragBench sample folder on s3://...); OUT's files are uploaded when
the edit is done, edit.json last. Exit status: 0 edited, 1 failure,
2 bad usage or bad inputs (the message says which input and why).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from model.options import DTYPE_NAMES, FUSION_MODES, SCHEDULERS, SCHEDULES, torch_dtype
from schemas import storage
from schemas.dragbench import META_FILE
from trainer.distributed import quiet_deepspeed


class UsageError(Exception):
    """Bad command line or inputs: printed as `error: ...`, exit status 2."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def resolution_argument(text: str) -> int | tuple[int, int]:
    """"512" -> 512 (square), "640x448" -> (640, 448)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
        raise argparse.ArgumentTypeError(f"expected N or WxH with positive integers, got {text!r}")
    return int(m.group(1)) if m.group(2) is None else (int(m.group(1)), int(m.group(2)))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs.edit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    io = ap.add_argument_group("inputs and output")
    io.add_argument("--image", required=True, metavar="IN",
                    help="source image file, or a DragBench sample folder")
    io.add_argument("--mask", help="PNG of the editable region (nonzero = editable)")
    io.add_argument("--drag", help='handle->target pairs, "x0,y0->x1,y1; x0,y0->x1,y1"')
    io.add_argument("--prompt", help="text prompt (default: empty, or the DragBench sample's)")
    io.add_argument("--out", required=True, metavar="OUT", help="output directory (created)")
    add_checkpoint_arguments(ap)
    s = add_sampling_arguments(ap)
    s.add_argument("--candidates", type=positive_int, default=1,
                   help="edits to sample (default 1)")
    s.add_argument("--sequential", type=positive_int, default=1,
                   help="split the drag into this many successive edits (default 1)")
    s.add_argument("--resize-back", action="store_true",
                   help="return the edit at the input's size (default: at the size it ran)")
    return ap


def add_checkpoint_arguments(ap: argparse.ArgumentParser) -> None:
    """The model flags (shared with jobs.evaluate); `checkpoint_paths` reads them."""
    ck = ap.add_argument_group("checkpoints")
    ck.add_argument("--checkpoints", metavar="ROOT", help="checkpoints directory (public layout)")
    ck.add_argument("--model-dir", metavar="D", help="LightningDrag directory")
    ck.add_argument("--base", metavar="D", help="SD-1.5 inpainting base model directory")
    ck.add_argument("--ip-adapter", metavar="D",
                    help="IP-Adapter directory (image_encoder/, ip-adapter_sd15.bin)")
    ck.add_argument("--lcm-lora", metavar="FILE", help="LCM-LoRA weights to fuse into the UNet")
    ck.add_argument("--vae", metavar="D", help="VAE directory (default: ROOT/sd-vae-ft-mse or "
                    "ROOT/sd-vae-ft-ema when there, else the base model's vae/)")
    ck.add_argument("--fusion", choices=FUSION_MODES,
                    help="expect this fusion mode (default: the one the checkpoint was saved with)")


def add_sampling_arguments(ap: argparse.ArgumentParser):
    """The edit settings shared with jobs.evaluate; returns the group for more."""
    s = ap.add_argument_group("sampling")
    s.add_argument("--steps", type=positive_int, help="denoising steps (default 25 ddim, 8 lcm)")
    s.add_argument("--guidance", type=float,
                   help="point-guidance scale (default 4.0 with ddim, 3.0 with lcm)")
    s.add_argument("--schedule", default="inverse-square", choices=SCHEDULES,
                   help="how the guidance scale decays (default inverse-square)")
    s.add_argument("--scheduler", choices=SCHEDULERS,
                   help="default: lcm when an LCM-LoRA is loaded, else ddim")
    s.add_argument("--seed", type=int, default=0, help="candidate k uses seed + k (default 0)")
    s.add_argument("--keep-unmasked", action="store_true",
                   help="keep every pixel outside the mask exactly as in the input")
    s.add_argument("--resolution", type=resolution_argument, metavar="N|WxH",
                   help="the size to run at, multiples of 64 for SD-1.5 (default: about the "
                        "model resolution's area with the input's aspect ratio)")
    s.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    s.add_argument("--dtype", default="fp32", choices=DTYPE_NAMES, help="default fp32")
    return s


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        return run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    if not storage.is_url(args.out) and os.path.exists(args.out) \
            and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} exists and is not a directory")
    with tempfile.TemporaryDirectory(prefix="edit-") as scratch:
        return _edit(args, scratch)


def fetch_input(flag: str, url: str | None, scratch: str) -> str | None:
    """A local path for an input flag's value (a URL is copied into `scratch`)."""
    if url is None:
        return None
    try:
        return storage.fetch(url, scratch)
    except FileNotFoundError:
        raise UsageError(f"{flag} {url}: not found") from None


def _edit(args, scratch: str) -> int:
    local = argparse.Namespace(**vars(args))
    local.image = fetch_input("--image", args.image, scratch)
    local.mask = fetch_input("--mask", args.mask, scratch)
    edit_input = read_inputs(local)
    paths = checkpoint_paths(args)

    device = resolve_device(args)
    started = time.perf_counter()
    pipe = load_pipeline(args, paths, device)
    load_seconds = time.perf_counter() - started

    from model.drawing import draw_drag, side_by_side
    from schemas.coords import resize_image, resize_mask
    try:
        result = pipe(edit_input["image"], edit_input["mask"], edit_input["handles"],
                      edit_input["targets"], prompt=edit_input["prompt"], steps=args.steps,
                      guidance=args.guidance, schedule=args.schedule, seed=args.seed,
                      candidates=args.candidates, sequential=args.sequential,
                      scheduler=args.scheduler, resolution=args.resolution,
                      resize_back=args.resize_back, keep_unmasked=args.keep_unmasked)
    except ValueError as e:  # DragInputError included
        raise UsageError(e) from None
    settings = {"fusion": pipe.model.fusion, "scheduler": result.scheduler, "steps": result.steps,
                "guidance": result.guidance, "schedule": args.schedule, "seed": args.seed,
                "candidates": args.candidates, "sequential": args.sequential,
                "keep_unmasked": args.keep_unmasked, "resolution": list(result.resolution),
                "resize_back": args.resize_back, "device": device, "dtype": args.dtype}

    # Written locally first (OUT itself when local), uploaded when complete (a URL).
    out = args.out if not storage.is_url(args.out) else os.path.join(scratch, "out")
    os.makedirs(out, exist_ok=True)
    names = ["edited.png"] + [f"edited_{k}.png" for k in range(1, len(result.images))]
    for name in storage.list_files(args.out):  # candidates a previous run into OUT left behind
        m = re.fullmatch(r"edited_(\d+)\.png", name)
        if m and int(m.group(1)) >= len(result.images):
            storage.remove(storage.join(args.out, name))
    for name, im in zip(names, result.images):
        Image.fromarray(im).save(os.path.join(out, name))
    # The source as the result's pixels are: at the size that ran, unless resized back.
    source = draw_drag(resize_image(edit_input["image"], result.size), result.handles,
                       result.targets, resize_mask(edit_input["mask"], result.size))
    labels = ["source"] + [f"candidate {k}" for k in range(len(result.images))]
    Image.fromarray(side_by_side([source, *result.images], labels)).save(
        os.path.join(out, "side_by_side.png"))
    h, w = edit_input["image"].shape[:2]
    given = lambda p: p if p is None or storage.is_url(p) else os.path.abspath(p)
    record = {
        "inputs": {"image": given(args.image), "mask": given(args.mask),
                   "dragbench_sample": edit_input["dragbench"], "size": [w, h],
                   "prompt": edit_input["prompt"],
                   "handles": np.asarray(edit_input["handles"]).tolist(),
                   "targets": np.asarray(edit_input["targets"]).tolist()},
        "checkpoints": {k: os.path.abspath(v) if v else None for k, v in paths.items()},
        "settings": settings,
        "result": {"seconds": result.seconds, "denoise_seconds": result.denoise_seconds,
                   "load_seconds": load_seconds,
                   "unet_calls": result.unet_calls, "unet_samples": result.unet_samples,
                   "appearance_calls": result.appearance_calls},
        "outputs": {"edited": names, "side_by_side": "side_by_side.png",
                    "size": list(result.size), "handles": result.handles.tolist(),
                    "targets": result.targets.tolist()},
    }
    with open(os.path.join(out, "edit.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    if out != args.out:
        storage.upload_tree(out, args.out, last=("edit.json",))
    w, h = result.size
    print(f"edited {len(result.images)} candidate(s) at {w}x{h} in {result.seconds:.2f} s, "
          f"{result.unet_calls} UNet calls (VAE {paths['vae']}) -> {args.out}")
    return 0


def resolve_device(args) -> str:
    """--device, or cuda when available (torch is imported here, after the cheap checks)."""
    quiet_deepspeed()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine")
    return device


def load_pipeline(args, paths: dict, device: str):
    """The DragEditPipeline of `checkpoint_paths(args)`, in --dtype on `device`; a checkpoint
    that does not load is a UsageError naming it."""
    from model.checkpoint import CheckpointError
    from model.pipeline import DragEditPipeline

    try:
        return DragEditPipeline.from_pretrained(
            paths["model_dir"], paths["base"], paths["ip_adapter"], lcm_lora=paths["lcm_lora"],
            vae_dir=paths["vae"], fusion=args.fusion, device=device,
            dtype=torch_dtype(args.dtype))
    except CheckpointError as e:
        raise UsageError(e) from None


def read_inputs(args) -> dict:
    """The image, mask, points and prompt, checked against each other (before any model loads)."""
    from model.points import DragInputError, editable_region, parse_drag, validate_drag
    from schemas.dragbench import DragBenchError, load_sample

    if os.path.isdir(args.image):
        if not os.path.isfile(os.path.join(args.image, META_FILE)):
            raise UsageError(f"--image {args.image} is a directory without {META_FILE}, "
                             "not a DragBench sample")
        given = [flag for flag, v in (("--mask", args.mask), ("--drag", args.drag)) if v]
        if given:
            raise UsageError(f"{' and '.join(given)} cannot be used with a DragBench sample "
                             f"folder ({args.image} provides its own mask and points)")
        try:
            sample = load_sample(args.image)
        except DragBenchError as e:
            raise UsageError(f"--image {args.image}: {e}") from None
        image, mask, handles, targets = sample.image, sample.mask, sample.handles, sample.targets
        prompt, dragbench = sample.prompt, True
    else:
        missing = [flag for flag, v in (("--mask", args.mask), ("--drag", args.drag)) if not v]
        if missing:
            raise UsageError(f"{' and '.join(missing)} required with an image file "
                             "(only a DragBench sample folder brings its own)")
        image = np.asarray(_open_image("--image", args.image).convert("RGB"))
        mask = editable_region(_open_image("--mask", args.mask))
        try:
            handles, targets = parse_drag(args.drag)
        except DragInputError as e:
            raise UsageError(f"--drag: {e}") from None
        prompt, dragbench = "", False
    h, w = image.shape[:2]
    try:
        handles, targets = validate_drag(handles, targets, (w, h), mask > 0)
    except DragInputError as e:
        raise UsageError(e) from None
    if args.prompt is not None:
        prompt = args.prompt
    return {"image": image, "mask": mask, "handles": handles, "targets": targets,
            "prompt": prompt, "dragbench": dragbench}


def _open_image(flag: str, path: str) -> Image.Image:
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except Exception as e:  # PIL raises several unrelated types for bad files
        raise UsageError(f"{flag} {path}: not a readable image ({type(e).__name__}: {e})") from None


# Each part's flag, and how a message names the part when it came from --checkpoints ROOT.
PART_FLAGS = {"root": "--checkpoints", "model_dir": "--model-dir", "base": "--base",
              "ip_adapter": "--ip-adapter", "lcm_lora": "--lcm-lora", "vae": "--vae"}
FROM_ROOT = {**{part: f"--checkpoints ({flag})" for part, flag in PART_FLAGS.items()},
             "lcm_lora": "--checkpoints (LCM-LoRA)"}


def checkpoint_paths(args) -> dict:
    """model_dir/base/ip_adapter/lcm_lora/vae paths from --checkpoints and the explicit flags
    (model.layout.resolve_paths has the rules); UsageError naming the flag when one is off."""
    from model.layout import LayoutError, resolve_paths

    try:
        return resolve_paths(args.checkpoints, lcm=args.scheduler == "lcm",
                             model_dir=args.model_dir, base=args.base,
                             ip_adapter=args.ip_adapter, lcm_lora=args.lcm_lora, vae=args.vae)
    except LayoutError as e:
        if e.part is None:
            raise UsageError("no checkpoints: give --checkpoints ROOT, or all of --model-dir, "
                             "--base and --ip-adapter (missing "
                             f"{', '.join(PART_FLAGS[p] for p in e.missing)})") from None
        if e.path is None:  # LCM sampling asked for, and no LoRA anywhere
            raise UsageError("--scheduler lcm needs an LCM-LoRA: give --lcm-lora FILE or "
                             "--checkpoints ROOT") from None
        where = FROM_ROOT[e.part] if e.from_root else PART_FLAGS[e.part]
        raise UsageError(f"{where} {e.path}: {e.problem}") from None

if __name__ == "__main__":
    sys.exit(main())
