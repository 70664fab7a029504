"""Benchmark: seconds per drag edit, against a bare UNet denoising loop in the same run.

  python bench/edit.py [--size tiny|sd15] [--device cpu|cuda] [--dtype fp32|fp16|bf16]
                       [--resolution 512] [--repeats 3] [--out bench/out/edit.json]

--size tiny  the tiny random checkpoints (`model.tiny`), saved and loaded in the public layout.
--size sd15  the real-size architecture with random weights, built in memory: SD-1.5 inpainting
             UNet and VAE, the CLIP ViT-L text tower, IP-Adapter's ViT-H image tower, the public
             point embedding (random weights time the same as trained ones).

Rows: DDIM-25 and LCM-8, each with point guidance (inverse-square, [uncond, cond] batch of 2)
and without. For each: median seconds per edit over --repeats after one warm-up edit and the
part spent in the denoising loop, backbone forward passes and evaluations per edit,
appearance-encoder passes per edit (must be 1), and the baseline: the same number of forward
passes at the same batch through a plain diffusers UNet with the same weights and no
LightningDrag processors (the floor the denoising loop can reach). The rest of an edit is
fixed cost: VAE encode (source, masked source) and decode, the appearance encoder, the CLIP
image and text encoders.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model.options import DTYPE_NAMES, SCHEDULERS, torch_dtype  # noqa: E402
from model.pipeline import DragEditPipeline  # noqa: E402

ROWS = [("DDIM-25, point guidance", "ddim", 25, "inverse-square"),
        ("DDIM-25, no guidance", "ddim", 25, "none"),
        ("LCM-8, point guidance", "lcm", 8, "inverse-square"),
        ("LCM-8, no guidance", "lcm", 8, "none")]


def tiny_pipeline(device, dtype) -> DragEditPipeline:
    from model.tiny import save_tiny_checkpoints
    root = tempfile.mkdtemp(prefix="bench-edit-")
    paths = save_tiny_checkpoints(root)
    return DragEditPipeline.from_pretrained(paths["model_dir"], paths["base"], paths["ip_adapter"],
                                            lcm_lora=paths["lcm_lora"], device=device, dtype=dtype)


def sd15_pipeline(device, dtype) -> DragEditPipeline:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import (CLIPImageProcessorPil, CLIPTextConfig, CLIPTextModel, CLIPTokenizer,
                              CLIPVisionConfig, CLIPVisionModelWithProjection)

    from model import architectures as arch
    from model.appearance_encoder import AppearanceEncoderModel
    from model.lightning_drag import ImageProjection, LightningDragModel
    from model.point_embedding import PointEmbedding
    from model.tiny_base import save_tiny_inpainting_base

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**arch.SD15_INPAINT_UNET)
        encoder = AppearanceEncoderModel.from_backbone(unet)
        points = PointEmbedding(arch.PUBLIC_POINT_EMBED_DIM, 8, 8)
        vision = CLIPVisionModelWithProjection(
            CLIPVisionConfig(**arch.IP_ADAPTER_SD15_IMAGE_ENCODER))
        proj = ImageProjection(768, arch.IP_ADAPTER_SD15_IMAGE_ENCODER["projection_dim"])
        model = LightningDragModel(unet, encoder, points, proj)
        vae = AutoencoderKL(**arch.SD15_VAE)
        text = CLIPTextModel(CLIPTextConfig(**arch.SD15_TEXT_ENCODER))
    # The tokenizer's vocabulary does not change the cost; the tiny one needs no download.
    tok_root = tempfile.mkdtemp(prefix="bench-tok-")
    save_tiny_inpainting_base(tok_root)
    tokenizer = CLIPTokenizer.from_pretrained(tok_root, subfolder="tokenizer")
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1).config
    pipe = DragEditPipeline(model, vae, text, tokenizer, vision, CLIPImageProcessorPil(), scheduler,
                            lcm=True)
    for m in (model, vae, text, vision):
        m.to(device, dtype)
    return pipe.to(device)


def bare_unet(pipe: DragEditPipeline):
    """The backbone's weights in a plain diffusers UNet (default attention processors)."""
    from diffusers import UNet2DConditionModel
    src = pipe.model.unet
    with torch.device(src.device):
        unet = UNet2DConditionModel.from_config(src.config)
    if unet.dtype != src.dtype:
        unet = unet.to(dtype=src.dtype)
    unet.load_state_dict({k: v for k, v in src.state_dict().items() if ".processor." not in k})
    return unet.eval()


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.inference_mode()
def time_bare_loop(unet, calls, batch, res, device, dtype, repeats) -> float:
    x = torch.randn(batch, 9, res // 8, res // 8, device=device, dtype=dtype)
    ctx = torch.randn(batch, 77 + 4, unet.config.cross_attention_dim, device=device, dtype=dtype)
    t = torch.full((batch,), 500, device=device)
    unet(x, t, ctx)  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            unet(x, t, ctx)
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=DTYPE_NAMES, default=None)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--schedulers", nargs="+", choices=SCHEDULERS, default=list(SCHEDULERS),
                    help="rows to run (default both)")
    ap.add_argument("--out", default=os.path.join("bench", "out", "edit.json"))
    args = ap.parse_args(argv)
    dtype_name = args.dtype or ("fp16" if args.device.startswith("cuda") else "fp32")
    dtype = torch_dtype(dtype_name)

    started = time.perf_counter()
    build = tiny_pipeline if args.size == "tiny" else sd15_pipeline
    pipe = build(args.device, dtype)
    print(f"built {args.size} pipeline in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    bare = bare_unet(pipe)
    res = args.resolution
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (res, res, 3), dtype=np.uint8)
    mask = np.zeros((res, res), np.uint8)
    mask[res // 8: -res // 8, res // 8: -res // 8] = 255
    handles = np.array([[res * 0.3, res * 0.4], [res * 0.6, res * 0.5]])
    targets = np.array([[res * 0.45, res * 0.4], [res * 0.6, res * 0.7]])

    rows = []
    for label, scheduler, steps, schedule in ROWS:
        if scheduler not in args.schedulers:
            continue
        kw = dict(steps=steps, scheduler=scheduler, schedule=schedule, resolution=res)
        pipe(image, mask, handles, targets, **kw)  # warm-up
        results = [pipe(image, mask, handles, targets, seed=i, **kw) for i in range(args.repeats)]
        r = results[0]
        seconds = statistics.median(x.seconds for x in results)
        loop = statistics.median(x.denoise_seconds for x in results)
        batch = r.unet_samples // r.unet_calls
        baseline = time_bare_loop(bare, r.unet_calls, batch, res, args.device, dtype, args.repeats)
        rows.append(dict(row=label, seconds=seconds, denoise_seconds=loop,
                         unet_calls=r.unet_calls, unet_samples=r.unet_samples,
                         appearance_calls=r.appearance_calls, bare_loop_seconds=baseline,
                         loop_ratio=loop / baseline))
        print(f"{label}: {seconds:.3f} s", file=sys.stderr, flush=True)

    device_name = (torch.cuda.get_device_name() if args.device.startswith("cuda")
                   else f"CPU ({platform.processor() or platform.machine()}, "
                        f"{os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    print(f"\n{args.size} architecture, {res}x{res}, {dtype_name}, {device_name}, torch "
          f"{torch.__version__}, median of {args.repeats} after a warm-up\n")
    print("| edit | s / edit | of which denoising | UNet passes | UNet evaluations "
          "| appearance passes | bare UNet loop s | denoising / bare loop |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {r['seconds']:.3f} | {r['denoise_seconds']:.3f} | "
              f"{r['unet_calls']} | {r['unet_samples']} | {r['appearance_calls']} | "
              f"{r['bare_loop_seconds']:.3f} | {r['loop_ratio']:.2f} |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(size=args.size, resolution=res, dtype=dtype_name, device=device_name,
                       rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
