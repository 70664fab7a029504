"""Command-line jobs (`python -m jobs.<name>`)."""
import os


def quiet_deepspeed() -> None:
    """On a machine without a GPU, DeepSpeed (imported by accelerate whenever diffusers loads
    a model) prints an accelerator auto-detection warning to *stdout*, into the jobs' own
    output. Naming the CPU accelerator up front skips the detection and its warning."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def out_dir_problem(out: str, force: bool) -> str | None:
    """Why a job that writes a fresh directory may not write to `out` (None: it may): a file,
    or a non-empty directory without --force."""
    if os.path.exists(out) and not os.path.isdir(out):
        return f"--out {out} exists and is not a directory"
    if os.path.isdir(out) and os.listdir(out) and not force:
        return f"--out {out} exists and is not empty; pass --force to write into it"
    return None
