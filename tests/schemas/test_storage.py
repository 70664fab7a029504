"""schemas.storage: one way to read, list and atomically write local paths and fsspec URLs
(memory:// here; the S3 server of tests.object_store in the job tests), storage settings
reaching fsspec, and secrets redacted."""
from __future__ import annotations

import os
import uuid

import fsspec
import pytest

from schemas import storage


@pytest.fixture
def memory_root():
    root = f"memory://storage-test-{uuid.uuid4().hex[:8]}"
    yield root
    storage.remove(root)


def test_publish_is_atomic_on_local_disks_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "dir" / "file.bin"
    storage.publish(str(target), b"first")
    assert target.read_bytes() == b"first" and os.listdir(target.parent) == ["file.bin"]

    # A write that fails midway leaves the old bytes and no temporary file behind.
    real_replace = os.replace

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        storage.publish(str(target), b"second")
    monkeypatch.setattr(os, "replace", real_replace)
    assert target.read_bytes() == b"first" and os.listdir(target.parent) == ["file.bin"]


def test_the_same_calls_work_on_a_url(memory_root, tmp_path):
    storage.publish(f"{memory_root}/a/b.txt", b"hello")
    storage.publish_text(f"{memory_root}/a/c.txt", "wörld")
    storage.publish(f"{memory_root}/a/.hidden.tmp-1234", b"unfinished")
    assert storage.read_bytes(f"{memory_root}/a/b.txt") == b"hello"
    assert storage.read_text(f"{memory_root}/a/c.txt") == "wörld"
    assert storage.list_files(f"{memory_root}/a") == {"b.txt": 5, "c.txt": 6}
    assert storage.list_files(f"{memory_root}/missing") == {}
    assert storage.list_names(f"{memory_root}/a") == {"b.txt", "c.txt"}
    assert storage.isdir(f"{memory_root}/a") and storage.isfile(f"{memory_root}/a/b.txt")
    assert storage.join(memory_root, "x", "y") == f"{memory_root}/x/y"
    assert storage.join(str(tmp_path), "x", "y") == str(tmp_path / "x" / "y")
    with storage.open_input(f"{memory_root}/a/b.txt") as f:
        assert f.read() == b"hello"


def test_trees_round_trip_with_the_named_files_last(memory_root, tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "state").mkdir(parents=True)
    (src / "state" / "rank_0.pt").write_bytes(b"0")
    (src / "trainer.json").write_text("{}")
    (src / "z.bin").write_bytes(b"z")
    order = []
    publish_file = storage.publish_file
    monkeypatch.setattr(storage, "publish_file",
                        lambda local, url: (order.append(storage.basename(url)),
                                            publish_file(local, url)))
    storage.upload_tree(str(src), f"{memory_root}/ckpt", last=("trainer.json",))
    assert order[-1] == "trainer.json" and sorted(order) == ["rank_0.pt", "trainer.json",
                                                              "z.bin"]
    out = tmp_path / "out"
    storage.download_tree(f"{memory_root}/ckpt", str(out))
    assert storage.local_files(str(out)) == ["state/rank_0.pt", "trainer.json", "z.bin"]
    assert (out / "state" / "rank_0.pt").read_bytes() == b"0"


def test_fetch_copies_urls_and_keeps_local_paths(memory_root, tmp_path):
    storage.publish(f"{memory_root}/sample/image.png", b"png")
    storage.publish(f"{memory_root}/one.png", b"one")
    local = storage.fetch(f"{memory_root}/sample", str(tmp_path))
    assert os.path.basename(local) == "sample" and os.listdir(local) == ["image.png"]
    assert open(storage.fetch(f"{memory_root}/one.png", str(tmp_path)), "rb").read() == b"one"
    assert storage.fetch("/some/local/path", str(tmp_path)) == "/some/local/path"
    with pytest.raises(FileNotFoundError):
        storage.fetch(f"{memory_root}/nothing.png", str(tmp_path))


def test_settings_become_fsspec_defaults_and_bad_ones_are_refused(monkeypatch):
    monkeypatch.setattr(fsspec.config, "conf", {})
    storage.configure(storage.StorageSettings(endpoint_url="http://127.0.0.1:9000",
                                              options={"gcs": {"project": "p"}}))
    assert fsspec.config.conf == {"s3": {"endpoint_url": "http://127.0.0.1:9000"},
                                  "s3a": {"endpoint_url": "http://127.0.0.1:9000"},
                                  "gcs": {"project": "p"}}
    storage.configure(None)  # nothing to do
    bad = storage.StorageSettings(options={"s3": ["anon"]})
    assert storage.settings_problem(bad) == \
        "storage.options.s3: expected a mapping of fsspec options, got list"
    with pytest.raises(ValueError, match="storage.options.s3: expected a mapping"):
        storage.configure(bad)


def test_redact_hides_every_secret_looking_value():
    settings = {"endpoint_url": "http://minio:9000",
                "options": {"s3": {"key": "AKIA", "secret": "s", "token": "t",
                                   "client_kwargs": {"aws_secret_access_key": "x",
                                                     "region_name": "eu"}},
                            "gcs": {"token": "/sa.json", "project": "p"},
                            "sftp": {"password": "pw", "username": "me"}}}
    assert storage.redact(settings) == {
        "endpoint_url": "http://minio:9000",
        "options": {"s3": {"key": "<redacted>", "secret": "<redacted>", "token": "<redacted>",
                           "client_kwargs": {"aws_secret_access_key": "<redacted>",
                                             "region_name": "eu"}},
                    "gcs": {"token": "<redacted>", "project": "p"},
                    "sftp": {"password": "<redacted>", "username": "me"}}}


def test_local_listings_leave_out_directories_and_unfinished_writes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "pairs-000000.tar").write_bytes(b"123")
    (tmp_path / ".pairs-000001.tar.tmp-1a2b3c4d").write_bytes(b"partial")
    assert storage.list_files(str(tmp_path)) == {"pairs-000000.tar": 3}
    assert storage.list_names(str(tmp_path)) == {"pairs-000000.tar"}
    assert storage.list_names(str(tmp_path / "missing")) == set()

