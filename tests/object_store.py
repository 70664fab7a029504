"""A real S3-protocol server on loopback for tests: moto in server mode, in its own process,
reached through s3fs (and pyarrow, boto3) with an endpoint URL and a key pair, exactly as a
user reaches MinIO or S3. One server per test session (`tests.conftest.s3`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

from tests.ray_cluster import free_port

# Distinctive credentials: tests search every file and log for them.
ACCESS_KEY_ID = "AKIADRAGVIDTEST0001"
SECRET_ACCESS_KEY = f"dragvid-test-secret-{uuid.uuid4().hex}"


class S3Server:
    def __init__(self, log_path: str):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc = None

    def env(self) -> dict:
        """The variables that point AWS clients at this server (s3fs, pyarrow, boto3)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_DEFAULT_REGION": "us-east-1"}

    def __enter__(self) -> "S3Server":
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto server did not start: see {self.log_path}")
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def new_bucket(self, prefix: str = "test") -> str:
        """A new empty bucket; returns its URL (s3://name)."""
        import s3fs

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem(endpoint_url=self.endpoint, key=ACCESS_KEY_ID,
                          secret=SECRET_ACCESS_KEY).mkdir(name)
        return f"s3://{name}"

    def files(self, url: str) -> dict[str, bytes]:
        """{key: bytes} of every object under `url`."""
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=self.endpoint, key=ACCESS_KEY_ID,
                               secret=SECRET_ACCESS_KEY, use_listings_cache=False)
        root = url.removeprefix("s3://").rstrip("/")
        return {path[len(root) + 1:]: fs.cat_file(path) for path in fs.find(root)}
