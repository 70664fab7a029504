"""The jobs that need no Ray of their own (make_videos, make_tiny_model, edit) also run as
`ray job submit --working-dir <repo> -- python -m jobs.<name> ...` on a real local cluster,
and write exactly what they write standalone. (build_pairs and train under `ray job submit`
are tested beside their other tests.)"""
from __future__ import annotations

import filecmp
import os
import shlex

import numpy as np
import pytest
from PIL import Image

from jobs import edit, make_tiny_model, make_videos
from tests.conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]
DRAGBENCH = REPO / "tests" / "fixtures" / "dragbench" / "animals" / "JH_2023-09-14-1823-59"


def all_files(root):
    return sorted(os.path.relpath(os.path.join(d, n), root)
                  for d, _, names in os.walk(root) for n in names)


def assert_same_tree(a, b):
    files = all_files(a)
    assert files and files == all_files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


def test_jobs_run_under_ray_job_submit_as_standalone(cluster, tmp_path, capsys, one_thread):
    """Standalone: each job's main() in this process (what `python -m jobs.<name>` runs).
    Submitted: the three jobs, each `python -m jobs.<name> ...`, in one job's entrypoint
    (`sh -c 'python -m ... && ...'`: one submission, one copy of the repository for all)."""
    # The job's working directory is Ray's copy of the repository: paths must be absolute.
    jobs = {
        "videos": (make_videos, ["--output", "{out}", "--width", "64", "--height", "48"]),
        "checkpoints": (make_tiny_model, ["--out", "{out}", "--seed", "3"]),
    }
    ckpt = tmp_path / "standalone" / "checkpoints"
    edit_args = ["--checkpoints", str(ckpt), "--image", str(DRAGBENCH), "--resolution", "64",
                 "--steps", "2", "--seed", "5", "--out"]
    commands = []
    for name, (job, args) in jobs.items():
        assert job.main([a.format(out=tmp_path / "standalone" / name) for a in args]) == 0
        commands.append(["python", "-m", job.__name__,
                         *[a.format(out=tmp_path / "submitted" / name) for a in args]])
    assert edit.main([*edit_args, str(tmp_path / "edit-standalone")]) == 0
    capsys.readouterr()
    commands.append(["python", "-m", "jobs.edit", *edit_args, str(tmp_path / "edit-submitted")])

    status, log = cluster.run("sh", "-c", " && ".join(map(shlex.join, commands)),
                              runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    assert status == "SUCCEEDED", log
    for name in jobs:
        assert_same_tree(tmp_path / "standalone" / name, tmp_path / "submitted" / name)
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
