"""Command-line jobs (`python -m jobs.<name>`)."""
import os


def quiet_deepspeed() -> None:
    """On a machine without a GPU, DeepSpeed (imported by accelerate whenever diffusers loads
    a model) prints an accelerator auto-detection warning to *stdout*, into the jobs' own
    output. Naming the CPU accelerator up front skips the detection and its warning."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
