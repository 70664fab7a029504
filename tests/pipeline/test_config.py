"""Config loading: defaults file, overrides, and every kind of bad value."""
from __future__ import annotations

import pytest
import yaml

from pipeline.config import ConfigError, PipelineConfig, from_dict, load_config
from tests.conftest import REPO


def test_default_yaml_is_the_defaults():
    assert load_config(str(REPO / "configs" / "pairs-default.yaml")) == PipelineConfig()


def test_example_configs_load():
    for path in (REPO / "configs").glob("pairs-*.yaml"):
        load_config(str(path))


def test_yaml_round_trip():
    cfg = load_config(None, ["output.resolution=512", "sample.gap_s=[0.5, 2]"])
    assert cfg.output.resolution == 512 and cfg.sample.gap_s == (0.5, 2)
    assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_exponent_floats_without_a_dot_are_floats():
    # YAML 1.1 (PyYAML) reads 5e-1 as the string '5e-1': float fields take it as a number
    cfg = load_config(None, ["filter.cut_threshold=5e-1", "execution.decode_timeout_s=1E2"])
    assert (cfg.filter.cut_threshold, cfg.execution.decode_timeout_s) == (0.5, 100.0)
    assert from_dict({"filter": {"cut_threshold": " 4.5e-1 "}}).filter.cut_threshold == 0.45


@pytest.mark.parametrize("data, message", [
    ({"filter": {"cut_threshold": "nan"}}, "filter.cut_threshold: expected float, got 'nan'"),
    ({"filter": {"cut_threshold": "1e-1x"}}, "filter.cut_threshold: expected float, got '1e-1x'"),
    ({"output": {"resolution": "5e2"}}, "output.resolution: expected int, got '5e2'"),
    ({"outptu": {}}, r"unknown config key\(s\) outptu"),
    ({"output": {"resoluton": 3}}, r"unknown config key\(s\) output.resoluton"),
    ({"output": {"resolution": "big"}}, "output.resolution: expected int, got 'big'"),
    ({"filter": {"align_camera": "no"}}, "filter.align_camera: expected true or false, got 'no'"),
    ({"filter": {"align_camera": 0}}, "filter.align_camera: expected true or false, got 0"),
    ({"points": {"min_change_covered": 1.5}}, "points.min_change_covered: 0..1"),
    ({"output": 5}, "output.: expected a mapping"),
    ({"output": {"resolution": 8}}, "output.resolution: 16..4096"),
    ({"track": {"backend": "raft"}}, "track.backend: builtin|cotracker"),
    ({"sample": {"gap_s": [2, 1]}}, "sample.gap_s"),
    ({"output": {"image_format": "webp"}}, "output.image_format: jpg|png"),
    ({"execution": {"tracker_actors": 0}}, "execution.tracker_actors >= 1"),
    ({"execution": {"tracker_gpus": -1.0}}, "execution: resources >= 0"),
    ({"ray": {"max_units_in_flight": 2}, "execution": {"max_units_in_flight": 3}},
     "ray.max_units_in_flight and execution.max_units_in_flight both set"),
    ({"ray": {"bogus": 1}}, r"unknown config key\(s\) ray"),
    ({"ray": {"task_cpus": 1.0}, "execution": 3}, "execution.: expected a mapping"),
    ({"storage": {"options": {"s3": "anon"}}}, r"storage.options.s3: expected a mapping"),
])
def test_bad_config(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data)


@pytest.mark.parametrize("track, message", [
    ({"backend": "raft"}, "track.backend: builtin|cotracker, got 'raft'"),
    ({"options": {"windw": 15}}, "track.options.windw: not an option of track.backend builtin "
                                 "(it takes fb_max_px, levels, residual_floor, residual_ratio, "
                                 "window)"),
    ({"backend": "cotracker", "options": {"window": 15}},
     "track.options.window: not an option of track.backend cotracker (it takes "
     "batch_size, model_resolution, window_len)"),
    ({"backend": "cotracker", "options": {"window_len": 7.5}},
     "track.options.window_len: expected int, got 7.5"),
    ({"backend": "cotracker", "options": {"model_resolution": 256}},
     "track.options.model_resolution: expected list, got 256"),
    ({"options": {"levels": True}}, "track.options.levels: expected int, got True"),
    ({"options": [1]}, "track.options: expected dict, got [1]"),
])
def test_bad_tracker_backend_or_option_is_named_exactly(track, message):
    from pipeline.tracking import BACKENDS

    with pytest.raises(ConfigError) as e:
        from_dict({"track": track})
    assert str(e.value) in (f"invalid config: {message}", message)
    assert "|".join(BACKENDS) == "builtin|cotracker"   # what the messages above list


def test_tracker_options_load_from_yaml_and_overrides():
    cfg = load_config(None, ["track.backend=cotracker", "track.options.window_len=16",
                             "track.options.model_resolution=[256, 384]"])
    assert cfg.track.options == {"window_len": 16, "model_resolution": [256, 384]}
    assert from_dict(yaml.safe_load(cfg.to_yaml())) == cfg
    assert from_dict({"track": {"options": {"fb_max_px": 1}}}).track.options == {"fb_max_px": 1}
    # content: other options are another dataset; a config without the key reads as {}
    assert cfg.content()["track"]["options"] == {"window_len": 16, "model_resolution": [256, 384]}
    assert from_dict({}).content()["track"]["options"] == {}


def test_bad_override():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["output.resolution"])


def test_content_leaves_out_how_a_run_executes_and_reaches_storage():
    base = from_dict({})
    resourced = from_dict({"execution": {"tracker_actors": 4, "tracker_gpus": 1.0,
                                         "task_cpus": 0.5, "max_retries": 9,
                                         "max_units_in_flight": 16, "decode_timeout_s": 60},
                           "storage": {"endpoint_url": "http://127.0.0.1:9000"}})
    assert resourced != base and resourced.content() == base.content()
    assert sorted(base.content()) == ["decode", "filter", "output", "points", "sample", "seed",
                                      "track"]
    assert from_dict({"output": {"resolution": 128}}).content() != base.content()
    assert yaml.safe_load(base.content_yaml()) == base.content()


def test_configs_written_before_the_split_are_read_into_execution():
    old = {"decode": {"timeout_s": 60.0, "score_fps": 2.0},
           "track": {"num_actors": 3, "num_gpus": 1.0, "num_cpus": 2.0, "grid_size": 12},
           "ray": {"max_units_in_flight": 5, "task_cpus": 0.5, "max_retries": 1}}
    cfg = from_dict(old)
    assert (cfg.decode.score_fps, cfg.track.grid_size) == (2.0, 12)
    assert cfg.execution == from_dict({"execution": {
        "decode_timeout_s": 60.0, "tracker_actors": 3, "tracker_gpus": 1.0, "tracker_cpus": 2.0,
        "max_units_in_flight": 5, "task_cpus": 0.5, "max_retries": 1}}).execution
    assert old["ray"] == {"max_units_in_flight": 5, "task_cpus": 0.5, "max_retries": 1}  # kept
    # --set with the old names works as before
    assert load_config(None, ["ray.max_units_in_flight=1"]).execution.max_units_in_flight == 1


def test_storage_options_reach_fsspec_and_secrets_are_redacted(monkeypatch):
    import fsspec

    from schemas import storage

    monkeypatch.setattr(fsspec.config, "conf", {})
    cfg = from_dict({"storage": {"endpoint_url": "http://127.0.0.1:9000",
                                 "options": {"s3": {"key": "AKIA-SECRET-ID", "secret": "s3cr3t",
                                                    "client_kwargs": {"region_name": "x"}},
                                             "gcs": {"token": "/keys/sa.json"}}}})
    storage.configure(cfg.storage)
    assert fsspec.config.conf["s3"] == {"key": "AKIA-SECRET-ID", "secret": "s3cr3t",
                                        "client_kwargs": {"region_name": "x"},
                                        "endpoint_url": "http://127.0.0.1:9000"}
    assert fsspec.config.conf["gcs"] == {"token": "/keys/sa.json"}
    assert storage.redact(cfg.to_dict()["storage"]) == {
        "endpoint_url": "http://127.0.0.1:9000",
        "options": {"s3": {"key": "<redacted>", "secret": "<redacted>",
                           "client_kwargs": {"region_name": "x"}},
                    "gcs": {"token": "<redacted>"}}}
