"""pipeline.stages: a stage list's checks, and the two drivers that run any such list, the local
fold and the Ray driver (`pipeline.run.run_stages`), on a toy list with one stage more than the
pair pipeline (`toy_stages`). The pair pipeline itself: test_pipeline.py (local) and
tests/jobs/test_build_pairs.py (Ray)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from pipeline.config import PipelineConfig
from pipeline.plan import Unit
from pipeline.stages import (PAIR_STAGES, FinishStage, LocalRun, PrepareStage, Resources,
                             TrackStage, check_stages)
from tests.conftest import REPO
from tests.pipeline.toy_stages import TOY_STAGES, KeepEven, Lengths, Rows, Square

UNITS = [Unit("u-mixed", "files", ("/v/a", "/v/bb", "/v/ccc", "/v/dddd", "/v/ee")),
         Unit("u-odd", "files", ("/v/a", "/v/ccc")),         # nothing left for `square`
         Unit("u-die", "files", ("/v/bb", "/v/dddddd"))]


def test_the_pair_pipeline_is_prepare_track_finish_with_its_resources():
    from pipeline.config import from_dict

    assert PAIR_STAGES == (PrepareStage, TrackStage, FinishStage)
    check_stages(PAIR_STAGES)
    ex = from_dict({"execution": {"task_cpus": 0.5, "tracker_actors": 3, "tracker_cpus": 2.0,
                                  "tracker_gpus": 1.0}}).execution
    assert [s.resources(ex) for s in PAIR_STAGES] == [
        Resources(cpus=0.5, spread=True), Resources(cpus=2.0, gpus=1.0, actors=3),
        Resources(cpus=0.5)]
    assert [(s.name, s.reads, s.writes, s.skip_empty) for s in PAIR_STAGES] == [
        ("prepare", (), "videos", False), ("track", ("videos",), "tracks", True),
        ("finish", ("videos", "tracks"), "rows", False)]


@pytest.mark.parametrize("stages, message", [
    ((Lengths, Lengths, Rows), "stage name 'lengths' used twice"),
    ((KeepEven, Rows), "stage 'keep-even' reads items, which no earlier stage writes"),
    ((Lengths, Square), "a stage list needs a last stage that always runs: it writes the "
                        "unit's video rows"),
    ((), "a stage list needs a last stage that always runs"),
])
def test_a_stage_list_no_driver_can_run_is_refused(stages, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_stages(stages)


def local_fold(out) -> list[list[dict]]:
    with LocalRun(PipelineConfig(), TOY_STAGES) as local:
        assert [getattr(w, "setups", 1) for w in local.workers] == [1, 1, 1, 1]
        rows = [local.run(u, str(out)) for u in UNITS if "die" not in u.name]
        rows.append(local.run(Unit("u-even", "files", ("/v/bb",)), str(out)))
    assert local.workers[-1].closed
    return rows


def test_local_fold_chains_filters_and_skips(tmp_path):
    mixed, odd, even = local_fold(tmp_path)
    # keep-even replaced `items` for the stages after it; square skipped where none was left
    assert [(r["status"], r["square"]) for r in mixed] == [
        ("filtered:odd", None), ("ok", 4), ("filtered:odd", None), ("ok", 16), ("ok", 4)]
    assert [(r["status"], r["square"]) for r in odd] == [("filtered:odd", None)] * 2
    assert [(r["status"], r["square"]) for r in even] == [("ok", 4)]
    assert sorted(os.listdir(tmp_path)) == ["u-even.json", "u-mixed.json", "u-odd.json"]


RAY_DRIVER = """
import json, sys
from jobs import private_ray_on_loopback
private_ray_on_loopback(None)
from ray import cloudpickle
from pipeline.config import from_dict
from pipeline.plan import Unit
import pipeline
import schemas
from pipeline.run import RunStats, run_stages
from schemas.ray_runtime import init_ray
from tests.pipeline import test_stages, toy_stages

cloudpickle.register_pickle_by_value(toy_stages)   # the workers import pipeline/ and schemas/
init_ray(None, (pipeline, schemas))
cfg = from_dict({"execution": {"max_retries": 0, "unit_attempts": 2, "task_cpus": 0.25,
                               "tracker_cpus": 0.25, "tracker_actors": 2,
                               "max_units_in_flight": 3}})
units = test_stages.UNITS + [Unit("u-boom", "files", ("/v/bb",))]
stats, lines = RunStats(units_total=len(units)), []
run_stages(toy_stages.TOY_STAGES, units, sys.argv[1], cfg, stats, lines.append)
print(json.dumps({"stats": stats.as_dict(), "failed": stats.units_failed, "progress": lines}))
"""


@pytest.mark.ray
@pytest.mark.slow
def test_ray_driver_runs_any_stage_list_as_the_local_fold_does(tmp_path):
    """An added filter stage (an actor pool writing what prepare wrote) takes one class and one
    list entry; the Ray driver skips, retries, replaces a lost actor and gives up on a failing
    unit as it does for the pair pipeline, and writes what the local fold writes."""
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    local_out.mkdir()
    ray_out.mkdir()
    local_fold(local_out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", RAY_DRIVER, str(ray_out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    stats, progress = result["stats"], result["progress"]

    for name in ("u-mixed.json", "u-odd.json"):
        assert (ray_out / name).read_bytes() == (local_out / name).read_bytes(), name
    assert json.loads((ray_out / "u-die.json").read_text()) == [
        {"decoded_frames": 2, "num_pairs": 1, "source_uri": "/v/bb", "square": 4,
         "status": "ok"},
        {"decoded_frames": 6, "num_pairs": 1, "source_uri": "/v/dddddd", "square": 36,
         "status": "ok"}]
    # u-boom once, u-die once; a unit queued on the dying actor behind u-die may be lost too
    assert (stats["units_done"], stats["units_failed"]) == (3, 1)
    assert stats["units_resubmitted"] >= 2
    assert result["failed"] == ["u-boom"]
    assert (stats["videos"], stats["pairs"]) == (9, 5)
    assert list(stats["units_by_node"].values()) == [3]
    lost = [line for line in progress if line.startswith("squarer actor")]
    # one replacement for the one death, though every unit queued on that actor fails with it
    assert len(lost) == 1 and all(re.fullmatch(r"squarer actor 0 lost \(Actor(Died|Unavailable)Error: "
                                     r".*\); replaced", line) for line in lost), progress
    assert any(re.fullmatch(r"unit u-die lost in square \(Actor(Died|Unavailable)Error: .*\); "
                            r"resubmitting it in 1 s \(attempt 2 of 2\)", line)
               for line in progress), progress
    assert any(line.startswith("unit u-boom lost in keep-even (RayTaskError(ValueError): ")
               and line.endswith("resubmitting it in 1 s (attempt 2 of 2)")
               for line in progress), progress
    assert any(line.startswith("ERROR: unit u-boom failed in keep-even after retries: "
                               "RayTaskError(ValueError): ") for line in progress), progress
    done = [line for line in progress if " done; so far " in line]
    assert len(done) == 3 and done[-1].startswith("[3/4 units] ")
