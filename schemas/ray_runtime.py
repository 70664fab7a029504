"""Starting or joining Ray, one way for every part that runs on it (the data engine's driver,
Ray Train's): join the address given, or $RAY_ADDRESS (which `ray job submit` sets), else
start a private local Ray; never attach silently to some other cluster on the machine.

Imports nothing of the project: callers name the packages their workers import."""
from __future__ import annotations

import os
from types import ModuleType
from typing import Sequence


def init_ray(address: str | None, packages: Sequence[ModuleType]) -> str:
    """Start or join Ray, shipping `packages` to the workers; returns what it did, for the
    log: "started a local cluster with 2 CPUs" or "joined HOST:PORT with 16 CPUs"."""
    import ray

    target = address or os.environ.get("RAY_ADDRESS") or "local"
    # Workers on any node import our packages from the runtime env, not from this checkout.
    # Paths, not module objects: inside `ray job submit` Ray merges (deep-copies) this with
    # the job's own runtime env, and modules cannot be copied.
    env = {"py_modules": [os.path.dirname(p.__file__) for p in packages]}
    if target == "local":
        ray.init(address="local", runtime_env=env, include_dashboard=False)
    else:
        ray.init(address=target, runtime_env=env)
    cpus = ray.cluster_resources().get("CPU", 0)
    return f"{'started a local cluster' if target == 'local' else 'joined ' + target} with " \
           f"{cpus:g} CPUs"
