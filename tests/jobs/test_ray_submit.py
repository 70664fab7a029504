"""The jobs that need no Ray of their own (make_videos, make_tiny_model, edit) also run as
`ray job submit --working-dir <repo> -- python -m jobs.<name> ...` on a real local cluster,
and write exactly what they write standalone. (build_pairs and train under `ray job submit`
are tested beside their other tests.)"""
from __future__ import annotations

import filecmp
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.ray_cluster import clean_env

pytestmark = [pytest.mark.ray, pytest.mark.slow]
DRAGBENCH = REPO / "tests" / "fixtures" / "dragbench" / "animals" / "JH_2023-09-14-1823-59"


def standalone(*args):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=clean_env(OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def all_files(root):
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, _, names in os.walk(root) for n in names)


def assert_same_tree(a, b):
    files = all_files(a)
    assert files and files == all_files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def test_jobs_run_under_ray_job_submit_as_standalone(cluster, tmp_path):
    # The job's working directory is Ray's copy of the repository: paths must be absolute.
    jobs = {
        "videos": ["jobs.make_videos", "--output", "{out}", "--width", "64", "--height", "48"],
        "checkpoints": ["jobs.make_tiny_model", "--out", "{out}", "--seed", "3"],
    }
    for name, args in jobs.items():
        here, there = tmp_path / "standalone" / name, tmp_path / "submitted" / name
        standalone(*[a.format(out=here) for a in args])
        status, log = cluster.run("python", "-m", *[a.format(out=there) for a in args],
                                  runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        assert status == "SUCCEEDED", log
        assert_same_tree(here, there)

    ckpt = tmp_path / "standalone" / "checkpoints"
    edit = ["jobs.edit", "--checkpoints", str(ckpt), "--image", str(DRAGBENCH),
            "--resolution", "64", "--steps", "2", "--seed", "5", "--out"]
    standalone(*edit, str(tmp_path / "edit-standalone"))
    status, log = cluster.run("python", "-m", *edit, str(tmp_path / "edit-submitted"),
                              runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    assert status == "SUCCEEDED", log
    assert f"-> {tmp_path / 'edit-submitted'}" in log  # its output reaches `ray job logs`
    a, b = (np.asarray(Image.open(tmp_path / d / "edited.png"))
            for d in ("edit-standalone", "edit-submitted"))
    assert a.shape == b.shape and np.array_equal(a, b)


def test_a_failing_job_is_reported_failed_with_its_error(cluster, tmp_path):
    status, log = cluster.run("python", "-m", "jobs.edit", "--checkpoints",
                              str(tmp_path / "missing"), "--image", str(DRAGBENCH),
                              "--out", str(tmp_path / "out"))
    assert status == "FAILED"
    assert "error:" in log and str(tmp_path / "missing") in log
