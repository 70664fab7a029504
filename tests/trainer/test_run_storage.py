"""A run directory on object storage (memory:// here; s3:// against a real S3-protocol server in
tests/jobs/test_object_storage.py): checkpoints complete or ignored, the newest kept, resumed
from a download; TensorBoard events uploaded and readable in place; the run config's keys;
secrets redacted wherever settings are written or shown."""
from __future__ import annotations

import json
import os
import uuid

import pytest
import yaml

from schemas import storage
from tests.trainer.trainer_helpers import config
from trainer.checkpoint import LocalCheckpoints, STATE_FILE, UrlCheckpoints, checkpoint_store
from trainer.config import from_dict, write_run_config
from trainer.distributed import init_distributed


@pytest.fixture
def run_url():
    root = f"memory://run-{uuid.uuid4().hex[:8]}"
    yield root
    storage.remove(root)


def save(store, step: int) -> str:
    name = f"step_{step:08d}"
    folder = store.begin(name, 0)
    os.makedirs(os.path.join(folder, "state"))
    with open(os.path.join(folder, "state", "model.pt"), "wb") as f:
        f.write(f"weights at {step}".encode())
    with open(os.path.join(folder, STATE_FILE), "w") as f:
        json.dump({"step": step}, f)
    store.commit(name, folder, 0, {"step": step})
    assert not os.path.exists(folder)        # the local copy is gone once uploaded
    return name


def test_url_checkpoints_keep_the_newest_complete_and_ignore_unfinished(run_url):
    init_distributed("cpu")                  # commit() waits for every rank
    store = checkpoint_store(run_url, keep_last=2)
    assert isinstance(store, UrlCheckpoints)
    assert isinstance(checkpoint_store("/local/run", 2), LocalCheckpoints)
    with store.latest() as latest:
        assert latest is None
    for step in (2, 4, 6):
        save(store, step)
    assert [storage.basename(c) for c in store.complete()] == ["step_00000004", "step_00000006"]
    # A checkpoint whose upload died before trainer.json is not one.
    storage.publish(f"{run_url}/checkpoints/step_00000008/state/model.pt", b"half")
    assert storage.basename(store.complete()[-1]) == "step_00000006"
    with store.latest() as latest:
        assert open(os.path.join(latest, "state", "model.pt"), "rb").read() == b"weights at 6"
        assert json.load(open(os.path.join(latest, STATE_FILE))) == {"step": 6}
    assert not os.path.exists(latest)        # the download is removed after use


def test_tensorboard_events_are_uploaded_and_read_in_place(run_url):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.metrics import TensorBoardLog

    tb = TensorBoardLog(run_url, sync_every_s=3600)
    tb.add_scalar("train/loss", 0.5, 1)
    tb.sync()                                # not yet time: nothing uploaded
    assert storage.list_files(f"{run_url}/tensorboard") == {}
    tb.sync(force=True)                      # a checkpoint
    assert len(storage.list_files(f"{run_url}/tensorboard")) == 1
    tb.add_scalar("train/loss", 0.25, 2)
    tb.close()
    events = EventAccumulator(f"{run_url}/tensorboard")
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 0.5), (2, 0.25)]
    assert not os.path.exists(tb.local)


def test_run_config_is_redacted_and_run_keys_may_change(run_url):
    secret = {"options": {"s3": {"key": "AKIA-ID", "secret": "s3cr3t"}}}
    cfg = config(run_url, "ckpt", storage=secret)
    assert write_run_config(cfg) == "new run"
    written = storage.read_text(f"{run_url}/config.yaml")
    assert "s3cr3t" not in written and "AKIA-ID" not in written
    assert yaml.safe_load(written)["storage"]["options"] == {
        "s3": {"key": "<redacted>", "secret": "<redacted>"}}
    assert write_run_config(cfg) == "same config: resuming"
    later = config(run_url, "ckpt", storage=secret, log={"every": 50, "val_every": 10},
                   checkpoint={"every": 5, "keep_last": 9}, data={"val_pairs": 0})
    assert write_run_config(later) == (
        "resuming with other run settings: checkpoint.every 2 -> 5, checkpoint.keep_last "
        "3 -> 9, data.val_pairs 2 -> 0, log.every 1 -> 50, log.val_every 0 -> 10")
    assert yaml.safe_load(storage.read_text(f"{run_url}/config.yaml"))["log"]["every"] == 50
    with pytest.raises(ValueError, match=r"these keys change the weights: "
                                         r"data.batch_size 2 -> 4, train.steps 4 -> 8;"):
        write_run_config(config(run_url, "ckpt", data={"batch_size": 4}, train={"steps": 8}))


def test_the_repr_of_settings_and_of_a_config_holding_them_is_redacted():
    settings = storage.StorageSettings(endpoint_url="http://minio:9000",
                                       options={"s3": {"key": "AKIA-ID", "secret": "s3cr3t"}})
    assert repr(settings) == ("StorageSettings(endpoint_url='http://minio:9000', options="
                              "{'s3': {'key': '<redacted>', 'secret': '<redacted>'}})")
    cfg = from_dict({"data": {"shards": "s"}, "model": {"checkpoints": "c"},
                     "storage": {"options": {"s3": {"secret": "s3cr3t"}}}})
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg)
    assert cfg.storage.options["s3"]["secret"] == "s3cr3t"   # what the filesystems get
