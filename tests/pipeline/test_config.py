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
    cfg = load_config(None, ["filter.cut_threshold=5e-1", "decode.timeout_s=1E2"])
    assert (cfg.filter.cut_threshold, cfg.decode.timeout_s) == (0.5, 100.0)
    assert from_dict({"filter": {"cut_threshold": " 4.5e-1 "}}).filter.cut_threshold == 0.45


@pytest.mark.parametrize("data, message", [
    ({"filter": {"cut_threshold": "nan"}}, "filter.cut_threshold: expected float, got 'nan'"),
    ({"filter": {"cut_threshold": "1e-1x"}}, "filter.cut_threshold: expected float, got '1e-1x'"),
    ({"output": {"resolution": "5e2"}}, "output.resolution: expected int, got '5e2'"),
    ({"outptu": {}}, r"unknown config key\(s\) outptu"),
    ({"output": {"resoluton": 3}}, r"unknown config key\(s\) output.resoluton"),
    ({"output": {"resolution": "big"}}, "output.resolution: expected int, got 'big'"),
    ({"output": 5}, "output.: expected a mapping"),
    ({"output": {"resolution": 8}}, "output.resolution: 16..4096"),
    ({"track": {"backend": "raft"}}, "track.backend: builtin|cotracker"),
    ({"sample": {"gap_s": [2, 1]}}, "sample.gap_s"),
    ({"output": {"image_format": "webp"}}, "output.image_format: jpg|png"),
])
def test_bad_config(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(data)


def test_bad_override():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["output.resolution"])
