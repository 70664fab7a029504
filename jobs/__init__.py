"""Command-line jobs (`python -m jobs.<name>`)."""
import os


def private_ray_on_loopback(ray_address: str | None) -> None:
    """A job that starts its own local Ray (no --ray-address and no RAY_ADDRESS) keeps it on
    127.0.0.1: otherwise Ray advertises the machine's routable address for that private
    cluster, and its processes talk to each other over the network interface. Ray reads the
    variable once, when it is imported: call this before anything imports ray."""
    if not ray_address and not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def out_dir_problem(out: str, force: bool) -> str | None:
    """Why a job that writes a fresh directory may not write to `out` (None: it may): a file,
    or a non-empty directory without --force."""
    if os.path.exists(out) and not os.path.isdir(out):
        return f"--out {out} exists and is not a directory"
    if os.path.isdir(out) and os.listdir(out) and not force:
        return f"--out {out} exists and is not empty; pass --force to write into it"
    return None
