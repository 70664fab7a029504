"""Every GPU figure the other benchmarks lack, in one run on one GPU (planned for under 8
minutes on an H100, not yet timed there), for the day a GPU is lent:

  PYTHONPATH=.cache/vendor python bench/gpu.py [--out bench/out/gpu.json] [--smoke]
                                               [--shards DIR] [--peak-tflops T]

Sections, each a markdown table (bench/RESULTS.md says where each goes):
  cotracker  CoTracker3 offline (random weights: the cost is the same as trained ones) at
             the official 384x512, 8-frame clips of 256x256 with a 24x24 query grid: clips/s
             one clip per forward pass against `track.options.batch_size` clips per pass
             (torch.func.vmap), and the peak GPU memory of each
  edit       drag-edit latency at 512x512 of the real-size architecture (random weights) in
             fp16: LCM-8 and DDIM-25, with and without point guidance, against a bare UNet
             loop in the same run (bench/edit.py)
  train      one training step of the real-size architecture in bf16 at 512 through the
             trainer's own DeepSpeed engine (ZeRO-2, one rank): samples/s, FLOPs per sample
             counted by torch's FlopCounterMode, MFU against the GPU's dense bf16 peak, peak
             memory
  loader     the trainer's shard loader at the same resolution and batch, with 0 and 4
             worker processes, on --shards or pair shards the pipeline builds here:
             samples/s against the step's samples/s (the loader must outrun the step)

--smoke runs the identical code paths on the CPU with tiny shapes (tiny models, 64x64
frames, a few steps) in under a minute; tests/bench/test_gpu.py runs it so the script
cannot rot. Its figures mean nothing.
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

# Dense bf16 tensor-core peak, TFLOP/s, by device-name fragment (vendor data sheets; the SXM
# parts). MFU is left out for a GPU not listed here unless --peak-tflops names it.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0}


class Shapes:
    """What each section runs at: the real sizes, or the smoke test's tiny ones."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.device = "cpu" if smoke else "cuda"
        self.model = "tiny" if smoke else "sd15"
        self.resolution = 64 if smoke else 512
        self.cotracker_resolution = (64, 64) if smoke else (384, 512)
        self.cotracker_window = 8 if smoke else 60   # the official 60 pads 8 frames to 60
        self.clip_size = 64 if smoke else 256
        self.clip_frames = 8
        self.grid = 4 if smoke else 24
        self.clips = 2 if smoke else 32
        self.cotracker_batch = 2 if smoke else 8
        self.edit_repeats = 1 if smoke else 3
        self.edit_dtype = "fp32" if smoke else "fp16"
        self.train_dtype = "fp32" if smoke else "bf16"
        self.train_batch = 2 if smoke else 8
        self.train_steps = 2 if smoke else 10
        self.loader_workers = (0, 1) if smoke else (0, 4)
        self.loader_batches = 3 if smoke else 30


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


# --- CoTracker ---------------------------------------------------------------------------

def bench_cotracker(shapes: Shapes) -> list[dict]:
    from pipeline.tracking.base import grid_queries
    from pipeline.tracking.cotracker import CoTrackerBackend

    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (shapes.clips, shapes.clip_frames, shapes.clip_size,
                                  shapes.clip_size, 3), dtype=np.uint8)
    queries = np.stack([grid_queries(shapes.clip_size, shapes.clip_size, shapes.grid)]
                       * shapes.clips)
    rows = []
    for batch_size in (1, shapes.cotracker_batch):
        with torch.random.fork_rng(devices=[]):
            tracker = CoTrackerBackend(None, device=shapes.device, allow_random_init=True,
                                       model_resolution=shapes.cotracker_resolution,
                                       window_len=shapes.cotracker_window,
                                       batch_size=batch_size)
        tracker.track(clips[:batch_size], queries[:batch_size])  # warm-up
        reset_peak(shapes.device)
        sync(shapes.device)
        start = time.perf_counter()
        tracker.track(clips, queries)
        sync(shapes.device)
        seconds = time.perf_counter() - start
        rows.append(dict(batch_size=batch_size, clips=shapes.clips, seconds=seconds,
                         clips_per_s=shapes.clips / seconds, peak_gib=peak_gib(shapes.device)))
        del tracker
    print(f"\n### CoTracker3 offline, {shapes.clips} clips of {shapes.clip_frames} frames "
          f"{shapes.clip_size}x{shapes.clip_size}, {shapes.grid}x{shapes.grid} queries, model "
          "resolution {}x{}\n".format(*shapes.cotracker_resolution))
    print("| clips per forward pass | s | clips/s | peak GPU memory GiB |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['seconds']:.3f} | {r['clips_per_s']:.2f} | "
              f"{fmt(r['peak_gib'])} |")
    return rows


# --- drag-edit latency ---------------------------------------------------------------------

def bench_edit(shapes: Shapes, out_dir: str) -> dict:
    from bench import edit

    path = os.path.join(out_dir, "edit.json")
    print()
    edit.main(["--size", shapes.model, "--device", shapes.device, "--dtype", shapes.edit_dtype,
               "--resolution", str(shapes.resolution), "--repeats", str(shapes.edit_repeats),
               "--out", path])
    with open(path) as f:
        return json.load(f)


# --- a training step -----------------------------------------------------------------------

def synthetic_batch(size: int, resolution: int) -> dict:
    """A training batch in trainer.data's layout: random images, a centre mask, 3 points."""
    from trainer.data import collate

    rng = np.random.default_rng(0)
    items = []
    for i in range(size):
        mask = np.zeros((resolution, resolution), np.uint8)
        mask[resolution // 4: -resolution // 4, resolution // 4: -resolution // 4] = 255
        points = rng.uniform(resolution * 0.3, resolution * 0.7, (3, 2))
        items.append(dict(source=rng.integers(0, 256, (resolution, resolution, 3), np.uint8),
                          target=rng.integers(0, 256, (resolution, resolution, 3), np.uint8),
                          mask=mask, handles=points, targets=points + 4.0, key=f"s{i}"))
    return collate(items)


def bench_train(shapes: Shapes, peak_tflops: float | None) -> dict:
    import deepspeed
    from torch.utils.flop_counter import FlopCounterMode

    from bench.edit import sd15_pipeline, tiny_pipeline
    from model.options import torch_dtype
    from trainer.config import from_dict
    from trainer.distributed import init_distributed
    from trainer.loop import deepspeed_config, sample_generators
    from trainer.model import TrainModule, diffusion_loss, noise_scheduler, prepare_inputs

    # the engine is built from the in-memory pipeline: no checkpoints or shards are read
    cfg = from_dict({"train": {"precision": shapes.train_dtype, "zero_stage": 2},
                     "model": {"checkpoints": "in-memory"},
                     "data": {"shards": "in-memory batch", "resolution": shapes.resolution,
                              "batch_size": shapes.train_batch}})
    _, _, device = init_distributed(shapes.device)
    build = sd15_pipeline if shapes.model == "sd15" else tiny_pipeline
    pipe = build(device, torch_dtype(shapes.train_dtype))
    module = TrainModule(pipe.model, cfg.model.train_backbone)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer,
                                           config=deepspeed_config(cfg))
    scheduler = noise_scheduler(pipe)
    batch = synthetic_batch(shapes.train_batch, shapes.resolution)

    def step(i: int) -> None:
        gens = sample_generators(0, i, 0, shapes.train_batch)
        inputs, goal, timesteps = prepare_inputs(pipe, scheduler, batch, "", gens)
        loss = diffusion_loss(engine(**inputs), goal, timesteps, scheduler)
        engine.backward(loss)
        engine.step()

    step(0)  # warm-up (kernels, DeepSpeed buffers)
    counter = FlopCounterMode(display=False)
    with counter:
        step(1)
    flops = counter.get_total_flops()
    reset_peak(device)
    sync(device)
    times = []
    for i in range(shapes.train_steps):
        start = time.perf_counter()
        step(2 + i)
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak = peak_tflops
    if peak is None and device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    achieved = flops / seconds / 1e12
    row = dict(batch=shapes.train_batch, resolution=shapes.resolution,
               dtype=shapes.train_dtype, step_seconds=seconds,
               samples_per_s=shapes.train_batch / seconds, flops_per_step=flops,
               tflops_per_s=achieved, mfu=achieved / peak if peak else None,
               peak_gib=peak_gib(device),
               trainable_params=sum(p.numel() for p in params))
    print(f"\n### Training step, {shapes.model} architecture, {shapes.resolution}x"
          f"{shapes.resolution}, {shapes.train_dtype}, batch {shapes.train_batch}, ZeRO-2, "
          f"median of {shapes.train_steps} steps\n")
    print("| s / step | samples/s | TFLOP / step (counted) | TFLOP/s | MFU | peak GPU memory "
          "GiB | trainable parameters |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {seconds:.3f} | {row['samples_per_s']:.2f} | {flops / 1e12:.3f} | "
          f"{achieved:.1f} | {fmt(row['mfu'], '.1%')} | {fmt(row['peak_gib'])} | "
          f"{row['trainable_params'] / 1e6:.1f} M |")
    return row


# --- the loader against the step ------------------------------------------------------------

def bench_loader(shapes: Shapes, shards: str | None, out_dir: str,
                 step_samples_per_s: float) -> list[dict]:
    from bench.train import time_loader
    from pipeline.synthetic import translate_pair_shards

    if not shards:
        shards = translate_pair_shards(os.path.join(out_dir, "videos"),
                                       os.path.join(out_dir, "shards"),
                                       resolution=min(256, shapes.resolution))
    rows = []
    for workers in shapes.loader_workers:
        r = time_loader(shards, shapes.resolution, shapes.train_batch, workers,
                        shapes.loader_batches)
        r["vs_step"] = r["samples_per_s"] / step_samples_per_s
        rows.append(r)
    print(f"\n### Loader at {shapes.resolution}x{shapes.resolution}, batch "
          f"{shapes.train_batch}, against the step's {step_samples_per_s:.2f} samples/s\n")
    print("| workers | samples/s | loader / step |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['samples_per_s']:.1f} | {r['vs_step']:.1f}x |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="the same code paths on the CPU with tiny shapes (tests run this)")
    ap.add_argument("--out", default=os.path.join("bench", "out", "gpu.json"))
    ap.add_argument("--shards", default=None,
                    help="pair shards for the loader (default: the pipeline builds some here)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense bf16 peak, for MFU on a GPU not in the table")
    args = ap.parse_args(argv)
    shapes = Shapes(args.smoke)
    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA device (--smoke runs the same paths on the CPU)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    work = tempfile.mkdtemp(prefix="bench-gpu-")
    print(f"## GPU figures ({'smoke: tiny shapes on the CPU, figures mean nothing' if args.smoke else 'real sizes'})\n")
    print(f"- device: {device_name(shapes.device)}; torch {torch.__version__}")
    result = dict(smoke=args.smoke, device=device_name(shapes.device),
                  cotracker=bench_cotracker(shapes))
    result["edit"] = bench_edit(shapes, work)
    result["train"] = bench_train(shapes, args.peak_tflops)
    result["loader"] = bench_loader(shapes, args.shards, work, result["train"]["samples_per_s"])
    result["seconds"] = time.perf_counter() - started
    print(f"\ntotal {result['seconds']:.0f} s")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
