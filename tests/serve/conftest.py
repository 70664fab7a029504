"""One running service and its inputs for the API and the browser tests."""
from __future__ import annotations

import time

import numpy as np
import pytest
import requests
from PIL import Image

from tests.conftest import REPO
from tests.ray_cluster import free_port

PHOTO = REPO / "tests" / "fixtures" / "dragbench" / "animals" / "JH_2023-09-14-1823-59" / \
    "original_image.png"


@pytest.fixture(scope="package")
def inputs(tmp_path_factory) -> dict:
    """A real photo cropped to 300x100 (3:1, the tiny model runs it at 128x64) and a mask."""
    root = tmp_path_factory.mktemp("serve-inputs")
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))[200:300, 100:400]
    mask = np.zeros((100, 300), np.uint8)
    mask[10:90, 30:220] = 255
    paths = {"image": root / "photo.png", "mask": root / "mask.png"}
    Image.fromarray(photo).save(paths["image"])
    Image.fromarray(mask).save(paths["mask"])
    return {**paths, "photo": photo, "mask_array": mask}


@pytest.fixture(scope="package")
def service(cluster, tiny_checkpoints):
    """The service as a cluster's users start it: `python -m jobs.serve` submitted with
    `ray job submit` to the session's cluster (the tiny model; small limits to test them). Its
    URL. At the end `ray job stop` ends it, which must remove its application cleanly (SIGTERM,
    with time to do so: RAY_JOB_STOP_WAIT_TIME_S)."""
    port = free_port()
    job = cluster.submit(
        "python", "-m", "jobs.serve", "--checkpoints", str(tiny_checkpoints),
        "--port", str(port), "--max-batch-size", "4", "--batch-wait-ms", "500",
        "--max-upload-mb", "1", "--max-pixels", "300000",
        runtime_env={"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "60"}})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        assert cluster.status(job) in ("PENDING", "RUNNING"), cluster.logs(job)[-4000:]
        assert time.time() < deadline, "the service did not come up:\n" + cluster.logs(job)
        try:
            if requests.get(f"{url}/v1/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:   # not listening yet, or the app not ready
            pass
        time.sleep(0.5)
    yield url
    cluster.stop(job)
    status, log = cluster.wait(job, timeout=120)
    assert status == "STOPPED", log[-4000:]
    assert f"serving {url}/" in log and "stopped" in log, log[-4000:]
    assert requests.get(f"{url}/v1/health", timeout=10).status_code == 404   # app removed
