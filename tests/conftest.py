"""Shared test setup."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# DeepSpeed compiles a CPU communication op on first use: one build, reused by every test, every
# process the tests start (they inherit the environment) and every later run.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


# --- CoTracker: vendored official code and a random-weights checkpoint --------------------------

# `make vendor-cotracker` unpacks the official CoTracker code here (it is not on PyPI).
VENDOR = REPO / ".cache" / "vendor"
if VENDOR.is_dir() and str(VENDOR) not in sys.path:
    sys.path.insert(0, str(VENDOR))


@contextlib.contextmanager
def one_torch_thread():
    """One intra-op torch thread inside, as job subprocesses get (OMP_NUM_THREADS=1): the
    test models are tiny, and on a busy 2-core machine torch's thread pool makes a 0.1 s edit
    take 15 s (measured); in-process references then match the subprocess runs bit for bit."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """The test runs on one intra-op torch thread (`one_torch_thread`)."""
    with one_torch_thread():
        yield


def require_cotracker() -> None:
    """The CoTracker backend is part of the product: its tests fail, never skip, without it."""
    try:
        import cotracker  # noqa: F401
    except ImportError:
        pytest.fail("official CoTracker code missing: run `make vendor-cotracker` "
                    "(`make test` does it)")


@pytest.fixture(scope="session")
def cotracker_checkpoint(tmp_path_factory) -> str:
    """Path of a CoTracker3 offline state dict with random (seeded) weights.

    Good for plumbing tests only: random weights cannot track.
    """
    require_cotracker()
    import torch
    from cotracker.predictor import CoTrackerPredictor

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        predictor = CoTrackerPredictor(checkpoint=None, offline=True, window_len=60)
    path = tmp_path_factory.mktemp("cotracker") / "cotracker3_random.pth"
    torch.save(predictor.model.state_dict(), path)
    return str(path)

# --- end CoTracker ------------------------------------------------------------------------------


# --- synthetic inputs, tiny checkpoints and pair shards, made once per session: read them, never
# change them ---

@pytest.fixture(scope="session")
def standard_clips(tmp_path_factory) -> list:
    """The synthetic standard set (`pipeline.synthetic.standard_set`, seed 0, 320x240), alone in
    its directory: [(path, GroundTruth)], one clip of each kind. Copy before changing."""
    from pipeline import synthetic

    return synthetic.standard_set(tmp_path_factory.mktemp("standard-clips"), seed=0)


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory) -> dict:
    """The awkward inputs of `pipeline.synthetic.make_bad_inputs`, alone in their directory:
    {path: the status prefix its manifest row must have}. Copy before changing."""
    from pipeline import synthetic

    return synthetic.make_bad_inputs(tmp_path_factory.mktemp("bad-inputs"))


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> Path:
    """A tiny random checkpoints root in the public layout (`model.tiny`, seed 0, the
    defaults): base, IP-Adapter, LightningDrag model and LCM-LoRA. Copy it before changing
    anything in it."""
    from model.tiny import save_tiny_checkpoints

    root = tmp_path_factory.mktemp("tiny-checkpoints")
    save_tiny_checkpoints(str(root), seed=0)
    return root


@pytest.fixture(scope="session")
def pair_shards(tmp_path_factory) -> str:
    """The directory of three 64x64 pair shards of uneven size (about 6, 6 and 3 pairs) from
    five translating synthetic clips (`pipeline.synthetic.translate_pair_shards`). Shared by
    every test that reads pairs: copy it before changing anything in it."""
    from pipeline.synthetic import translate_pair_shards

    return translate_pair_shards(tmp_path_factory.mktemp("translate-videos"),
                                 tmp_path_factory.mktemp("pairs"))


# --- Ray clusters, object storage: one of each per session -------------------------------------

@pytest.fixture(scope="session")
def cluster():
    """A running local Ray cluster, started as users start one (`ray start --head` on loopback,
    token authentication; tests.ray_cluster.LocalCluster): jobs are submitted to it with
    `ray job submit`, or drivers join it with --ray-address."""
    from tests.ray_cluster import LocalCluster

    with LocalCluster(num_cpus=2) as c:
        yield c


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A local S3-protocol server (tests.object_store.S3Server). Its endpoint and credentials
    are put in the environment for the rest of the session, so every process the tests start
    (jobs, Ray workers) reaches it the standard way (AWS_ENDPOINT_URL, AWS_* keys)."""
    from tests.object_store import S3Server

    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with S3Server(str(log)) as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        yield server
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def multinode(s3):
    """A head and two worker nodes on loopback (tests.ray_cluster.MultiNodeCluster). Its nodes
    reach the S3 server the standard way, as a real cluster's nodes reach the store: they are
    started with its endpoint and credentials in their environment."""
    from tests.ray_cluster import MultiNodeCluster

    with MultiNodeCluster() as cluster:
        yield cluster
