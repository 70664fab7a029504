"""Evaluate a drag-editing model on DragBench or on held-out video pairs.

  python -m jobs.evaluate --bench dragbench --data DIR --out OUT
      --dift-model SD21_DIR --alexnet FILE --lpips FILE
      [--checkpoints ROOT | --model-dir D --base D --ip-adapter D] [model and sampling flags
      as in jobs.edit] [--seeds K] [--dift-prompt sample|empty] [--dift-prompt-embeds FILE]
      [--dift-ensemble 8] [--dift-size N] [--dift-seed 42]
      [--baselines identity|none] [--compare NAME=ROOT ...] [--limit N] [--gallery-rows 8]
  python -m jobs.evaluate --bench pairs --data SHARDS --out OUT --alexnet FILE --lpips FILE
      [model and sampling flags] [--seeds K] [--tracker builtin|cotracker|patch] [--patch-size 15]
      [--tracker-checkpoint FILE] [--tracker-device cpu|cuda] [--baselines ...] [--compare ...]
      [--limit N] [--gallery-rows 8]

dragbench: DIR holds DragBench sample folders (found recursively: original_image.png,
meta_data.pkl); metrics Mean Distance by DIFT matching (--dift-model: a Stable Diffusion 2.1
directory) and Image Fidelity = 1 - LPIPS. pairs: SHARDS is a directory, glob, .tar or URL of
pair shards from jobs.build_pairs; metrics Mean Distance by following the handles into the edit
(--tracker), PSNR and LPIPS against the real target frame inside and outside the mask.
LPIPS needs --alexnet (torchvision AlexNet state dict) and --lpips (LPIPS v0.1 alex linear
layers). --compare NAME=ROOT (repeatable) also evaluates the model of another checkpoints root
(e.g. the untrained initial model) as method NAME, with the same sampling settings.
Nothing is downloaded; `python -m jobs.make_tiny_extractors --out DIR` writes tiny random
stand-ins. See docs/evaluation.md.

Sizes: --resolution N|WxH when given; otherwise DragBench edits at the model's square (its
protocol) and pairs run as the release runs user images (about the model resolution's area
with the input's aspect ratio); results are compared at the input's size.

OUT receives results.parquet and results.csv (one row per sample and method), summary.md (also
printed), summary.json and gallery.png; progress lines go to stderr. --data and OUT may be fsspec
URLs (s3://bucket/pairs-heldout, s3://bucket/eval/exp1); a DragBench root on a URL is copied
to a temporary directory first. A sample that cannot be
read or edited is a failed row (`failed:<ErrorClass>: <message>`) and the run goes on.
Exit status: 0 the run completed, 1 every sample failed for the model, 2 bad usage.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

from jobs.edit import (UsageError, positive_int, add_checkpoint_arguments, add_sampling_arguments,
                       checkpoint_paths, fetch_input, load_pipeline, resolve_device)
from pipeline.tracking import BACKENDS
from schemas import storage

BENCHES = ("dragbench", "pairs")
TRACKERS = (*BACKENDS, "patch")        # the data engine's, then PatchMatcher (trainer.evaluation)
DIFT_PROMPTS = ("empty", "sample")     # trainer.evaluation.bench_dragbench.DIFT_PROMPTS
BASELINES = ("identity", "none")       # trainer.evaluation.editors.BASELINES, or none


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    io = ap.add_argument_group("benchmark and output")
    io.add_argument("--bench", required=True, choices=BENCHES)
    io.add_argument("--data", required=True,
                    help="DragBench root (dragbench) or pair shards (pairs)")
    io.add_argument("--out", required=True, metavar="OUT", help="output directory (created)")
    io.add_argument("--baselines", default="identity", choices=BASELINES,
                    help="baseline methods evaluated beside the model (default identity)")
    io.add_argument("--compare", action="append", default=[], metavar="NAME=ROOT",
                    type=compare_argument,
                    help="also evaluate the checkpoints root ROOT as method NAME (repeatable)")
    io.add_argument("--limit", type=positive_int, help="evaluate only the first N samples")
    io.add_argument("--gallery-rows", type=int, default=8,
                    help="samples shown in gallery.png (default 8)")
    add_checkpoint_arguments(ap)
    sampling = add_sampling_arguments(ap)
    sampling.add_argument("--seeds", type=positive_int, default=1,
                          help="edit every sample with K seeds (--seed, --seed + 1, ...; one "
                               "batch) and average its metrics over the K edits: single "
                               "edits vary with the seed, K > 1 steadies the comparison "
                               "(default 1)")
    m = ap.add_argument_group("metric networks")
    m.add_argument("--alexnet", metavar="FILE", help="torchvision AlexNet state dict (LPIPS trunk)")
    m.add_argument("--lpips", metavar="FILE", help="LPIPS v0.1 AlexNet linear layers")
    m.add_argument("--dift-model", metavar="D", help="Stable Diffusion 2.1 directory (dragbench)")
    m.add_argument("--dift-prompt-embeds", metavar="FILE",
                   help="precomputed empty-prompt embeddings (safetensors, `prompt_embeds`) "
                        "used instead of the DIFT model's text encoder")
    m.add_argument("--dift-prompt", default="sample", choices=DIFT_PROMPTS,
                   help="DIFT's prompt: the sample's own (default: the protocol of DragBench's "
                        "evaluation script, so numbers compare with published ones) or empty")
    m.add_argument("--dift-ensemble", type=positive_int, default=8,
                   help="noise draws averaged per image (default 8)")
    m.add_argument("--dift-size", type=positive_int,
                   help="square size the DIFT model sees (default: each image's own)")
    m.add_argument("--dift-seed", type=int, default=42, help="DIFT noise seed (default 42)")
    m.add_argument("--tracker", default="builtin", choices=TRACKERS,
                   help="how the pairs' Mean Distance follows the handles into the edit: the "
                        "data engine's tracker (builtin, cotracker) or patch matching over the "
                        "whole image, which large jumps do not defeat (default builtin)")
    m.add_argument("--patch-size", type=positive_int, default=15,
                   help="odd patch side in pixels for --tracker patch (default 15)")
    m.add_argument("--tracker-checkpoint", metavar="FILE", help="CoTracker weights")
    m.add_argument("--tracker-device", choices=("cpu", "cuda"),
                   help="default: --device")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        return run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def compare_argument(text: str) -> tuple[str, str]:
    """NAME=ROOT -> (NAME, ROOT); NAME is a method name in the results (letters, digits, -, _)."""
    name, sep, root = text.partition("=")
    if not sep or not root or not name.replace("-", "").replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected NAME=ROOT with a NAME of letters, digits, "
                                         f"- and _, got {text!r}")
    return name, root


def check_usage(args) -> None:
    """Every flag that can be checked before a model loads."""
    if not storage.is_url(args.out) and os.path.exists(args.out) \
            and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} exists and is not a directory")
    need = ["--alexnet", "--lpips"] + (["--dift-model"] if args.bench == "dragbench" else [])
    missing = [flag for flag in need if getattr(args, flag[2:].replace("-", "_")) is None]
    if missing:
        raise UsageError(f"--bench {args.bench} needs {', '.join(missing)}")
    for flag in ("--alexnet", "--lpips", "--dift-prompt-embeds", "--tracker-checkpoint"):
        path = getattr(args, flag[2:].replace("-", "_"))
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"{flag} {path}: file not found")
    if args.bench == "dragbench":
        if not storage.isdir(args.data):
            raise UsageError(f"--data {args.data}: not a directory")
        if not os.path.isdir(args.dift_model):
            raise UsageError(f"--dift-model {args.dift_model}: not a directory")
        if args.dift_prompt == "sample" and args.dift_prompt_embeds:
            raise UsageError("--dift-prompt-embeds holds the empty prompt only: pass "
                             "--dift-prompt empty with it (sample, the default, needs the DIFT "
                             "model's text encoder)")
    names = ["model", *(name for name, _ in args.compare), args.baselines]
    repeated = sorted({name for name in names if names.count(name) > 1} - {"none"})
    if repeated:
        raise UsageError(f"--compare: method name {repeated[0]} is taken (model, the baseline, "
                         "and every --compare need their own names)")
    for name, root in args.compare:
        if not os.path.isdir(root):
            raise UsageError(f"--compare {name}={root}: not a directory")
    if args.tracker == "patch" and (args.patch_size < 3 or args.patch_size % 2 == 0):
        raise UsageError(f"--patch-size must be odd and at least 3, got {args.patch_size}")
    if args.bench == "pairs" and args.tracker == "cotracker" and not args.tracker_checkpoint:
        raise UsageError("--tracker cotracker needs --tracker-checkpoint FILE")


def run(args) -> int:
    check_usage(args)
    with tempfile.TemporaryDirectory(prefix="evaluate-") as scratch:
        # DragBench is read from a local directory; pair shards stream from the URL itself.
        data = fetch_input("--data", args.data, scratch) if args.bench == "dragbench" \
            else args.data
        return _evaluate(args, data)


def _evaluate(args, data: str) -> int:
    paths = checkpoint_paths(args)
    device = resolve_device(args)
    from model.checkpoint import CheckpointError
    from trainer.evaluation.editors import BASELINES as BASELINE_EDITORS
    from trainer.evaluation.editors import PipelineEditor
    from trainer.evaluation.lpips import load_lpips
    from trainer.evaluation.report import write_report
    from trainer.evaluation.results import STATUS_OK

    data = _bench_data(args, data)
    pipe = load_pipeline(args, paths, device)
    try:
        lpips = load_lpips(args.alexnet, args.lpips, device)
    except CheckpointError as e:
        raise UsageError(e) from None
    sampling = dict(steps=args.steps, guidance=args.guidance, schedule=args.schedule,
                    scheduler=args.scheduler, seed=args.seed, seeds=args.seeds,
                    resolution=args.resolution, keep_unmasked=args.keep_unmasked)

    def editor(pipe):
        # DragBench's protocol edits at the model's square; user images (pairs) as the release
        # does (DragEditPipeline.run_size). Either way the result comes back at the input size.
        square = args.resolution is None and args.bench == "dragbench"
        return PipelineEditor(pipe, **{**sampling,
                                       "resolution": pipe.resolution if square else args.resolution})

    editors = {"model": editor(pipe)}
    compared = {}
    for name, root in args.compare:
        other = argparse.Namespace(**{**vars(args), "checkpoints": root, "model_dir": None,
                                      "base": None, "ip_adapter": None, "lcm_lora": None,
                                      "vae": None})
        compared[name] = checkpoint_paths(other)
        editors[name] = editor(load_pipeline(other, compared[name], device))
    if args.baselines != "none":
        editors[args.baselines] = BASELINE_EDITORS[args.baselines]

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.bench == "dragbench":
        result = _run_dragbench(args, data, editors, lpips, device, progress)
    else:
        result = _run_pairs(args, data, editors, lpips, device, progress)
    settings = {"data": args.data, "checkpoints": paths,
                "compare": compared, "device": device, "dtype": args.dtype, **sampling,
                "resolution": editors["model"].settings["resolution"] or "release rule",
                **resolved_defaults(args, pipe),
                "limit": args.limit, "alexnet": args.alexnet, "lpips": args.lpips}
    if args.bench == "dragbench":
        settings.update(dift_model=args.dift_model, dift_prompt=args.dift_prompt,
                        dift_prompt_embeds=args.dift_prompt_embeds,
                        dift_ensemble=args.dift_ensemble, dift_size=args.dift_size,
                        dift_seed=args.dift_seed)
    else:
        settings.update(tracker=args.tracker, tracker_checkpoint=args.tracker_checkpoint,
                        patch_size=args.patch_size if args.tracker == "patch" else None)
    print(write_report(args.out, result, settings), end="")
    model_ok = [r for r in result.rows if r["method"] == "model" and r["status"] == STATUS_OK]
    return 0 if model_ok else 1


def resolved_defaults(args, pipe) -> dict:
    """The scheduler, steps and guidance the model's edits used (the defaults filled in)."""
    return dict(zip(("scheduler", "steps", "guidance"),
                    pipe.sampling(args.scheduler, args.steps, args.guidance)))


def _bench_data(args, data: str):
    """The samples to evaluate: DragBench sample folders or shard URLs; none is bad usage."""
    if args.bench == "dragbench":
        from trainer.evaluation.bench_dragbench import sample_ids
        samples = sample_ids(data)
        if not samples:
            raise UsageError(f"--data {args.data}: no DragBench sample folders (with "
                             "meta_data.pkl) found")
        return data
    from schemas.shard import list_shards
    try:
        return list_shards(data)
    except ValueError as e:
        raise UsageError(f"--data: {e}") from None


def _run_dragbench(args, root, editors, lpips, device, progress):
    from model.checkpoint import CheckpointError
    from trainer.evaluation.bench_dragbench import DiftSettings, evaluate_dragbench
    from trainer.evaluation.dift import DiftFeaturizer

    try:
        dift = DiftFeaturizer.from_pretrained(args.dift_model, args.dift_prompt_embeds, device)
    except CheckpointError as e:
        raise UsageError(e) from None
    size = (args.dift_size, args.dift_size) if args.dift_size else None
    settings = DiftSettings(prompt=args.dift_prompt, ensemble=args.dift_ensemble, size=size,
                            seed=args.dift_seed)
    return evaluate_dragbench(root, editors, dift, lpips, settings, limit=args.limit,
                              gallery_rows=args.gallery_rows, progress=progress)


def _run_pairs(args, shards, editors, lpips, device, progress):
    # builtin/cotracker come from the data engine; trainer/ only sees the Tracker protocol.
    from pipeline.config import TrackConfig
    from pipeline.tracking import TrackerError, make_tracker
    from trainer.evaluation.bench_pairs import evaluate_pairs
    from trainer.evaluation.matching import PatchMatcher

    if args.tracker == "patch":
        tracker = PatchMatcher(args.patch_size)
    else:
        try:
            tracker = make_tracker(TrackConfig(backend=args.tracker,
                                               checkpoint=args.tracker_checkpoint,
                                               device=args.tracker_device or device))
        except TrackerError as e:
            raise UsageError(f"--tracker {args.tracker}: {e}") from None
    return evaluate_pairs(shards, editors, tracker, lpips, limit=args.limit,
                          gallery_rows=args.gallery_rows, progress=progress)


if __name__ == "__main__":
    sys.exit(main())
