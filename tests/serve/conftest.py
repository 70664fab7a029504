"""One running service and its inputs for the API and the browser tests."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
from PIL import Image

from tests.conftest import REPO
from tests.ray_cluster import clean_env, free_port

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
    """The service on the session cluster: its URL. Stopped with SIGINT at the end, which
    must end it cleanly."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.serve", "--checkpoints", str(tiny_checkpoints),
         "--ray-address", cluster.address, "--port", str(port), "--max-batch-size", "4",
         "--batch-wait-ms", "500", "--max-upload-mb", "1", "--max-pixels", "300000"],
        cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.time() < deadline, "the service did not come up"
        try:
            if requests.get(f"{url}/v1/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:   # not listening yet, or the app not ready
            pass
        time.sleep(0.5)
    yield url
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-4000:]
    assert f"serving {url}/" in output and "stopped" in output


