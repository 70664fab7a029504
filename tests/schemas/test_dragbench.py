"""DragBench samples: the two real fixtures, round trips, every bad input with its exact
message, and pickles that try to run code."""
from __future__ import annotations

import importlib
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.dragbench import DragBenchError, find_samples, load_sample

# Two real DragBench samples, copied from ../shared/fixtures so a bare checkout has them.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dragbench"
ANIMALS = FIXTURES / "animals" / "JH_2023-09-14-1823-59"
LANDSCAPE = FIXTURES / "land_scape" / "PJC_2023-09-14-1925-41"


@pytest.fixture(scope="module")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"DragBench fixtures missing: expected them at {FIXTURES}")
    return FIXTURES


# --- the real samples ---------------------------------------------------------------------------

REAL = {
    ANIMALS: {"prompt": "a photo of goats", "handles": [[239, 170]],
              "targets": [[165, 180]], "mask_pixels": 15927},
    LANDSCAPE: {"prompt": "A photo of  mountains at night",
                "handles": [[323, 273], [415, 279]], "targets": [[278, 243], [448, 242]],
                "mask_pixels": 60318},
}


@pytest.mark.parametrize("folder", list(REAL), ids=["animals", "land_scape"])
def test_real_samples_load(fixtures, folder):
    want = REAL[folder]
    s = load_sample(folder)
    assert s.name == folder.name and s.path == str(folder)
    assert s.image.shape == (512, 512, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (512, 512) and s.mask.dtype == np.uint8
    assert set(np.unique(s.mask)) == {0, 255}                 # stored as 0/1, read as 0/255
    assert int((s.mask == 255).sum()) == want["mask_pixels"]
    assert s.prompt == want["prompt"]
    assert s.handles.dtype == np.float64 and s.handles.shape == s.targets.shape
    np.testing.assert_array_equal(s.handles, want["handles"])
    np.testing.assert_array_equal(s.targets, want["targets"])


def test_real_samples_are_numpy1_pickles(fixtures):
    # The real files name the numpy 1.x module; the safe unpickler must admit that spelling.
    for folder in REAL:
        assert b"numpy.core.multiarray" in (folder / "meta_data.pkl").read_bytes()


@pytest.mark.parametrize("folder", list(REAL), ids=["animals", "land_scape"])
def test_real_points_are_x_then_y(fixtures, folder):
    # The images are square, so shapes cannot tell x from y; the mask and the drag rendering
    # can. Every handle lies in the mask at row y, column x, and user_drag.png draws a white
    # marker at row y, column x of every point. Read the other way round, they do not.
    s = load_sample(folder)
    drag = np.asarray(Image.open(folder / "user_drag.png").convert("RGB"))
    for x, y in s.handles.astype(int):
        assert s.mask[y, x] == 255
    for x, y in np.concatenate([s.handles, s.targets]).astype(int):
        assert drag[y, x].tolist() == [255, 255, 255]
    swapped = [drag[x, y].tolist() == [255, 255, 255]
               for x, y in np.concatenate([s.handles, s.targets]).astype(int)]
    assert not any(swapped)


def test_find_samples_on_fixtures(fixtures):
    assert find_samples(fixtures) == [str(ANIMALS), str(LANDSCAPE)]


# --- writing samples ----------------------------------------------------------------------------

W, H = 40, 30


def write_sample(folder: Path, meta=None, image=None, protocol=4, raw: bytes | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "original_image.png")
    if raw is None:
        raw = pickle.dumps(meta if meta is not None else good_meta(), protocol=protocol)
    (folder / "meta_data.pkl").write_bytes(raw)
    return folder


def good_meta(**changes):
    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 10:30] = 1
    meta = {"prompt": "a photo of a cat", "points": [[12, 6], [25, 9], [29, 19], [3, 28]],
            "mask": mask}
    meta.update(changes)
    return meta


@pytest.mark.parametrize("protocol", [4, 5])  # 4 as DragBench; 5 goes through _frombuffer
def test_round_trip(tmp_path, protocol):
    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    meta = good_meta(points=[[12.25, 6.0], [25.0, 9.5], [29.0, 19.0], [3.0, 28.0]])
    folder = write_sample(tmp_path / "cat", meta, image, protocol=protocol)
    s = load_sample(folder)
    assert s.name == "cat" and s.path == str(folder) and s.prompt == "a photo of a cat"
    np.testing.assert_array_equal(s.image, image)
    np.testing.assert_array_equal(s.mask, meta["mask"] * 255)
    np.testing.assert_array_equal(s.handles, [[12.25, 6.0], [29.0, 19.0]])
    np.testing.assert_array_equal(s.targets, [[25.0, 9.5], [3.0, 28.0]])


@pytest.mark.parametrize("points", [
    [[12, 6], [25, 9]],                                       # python ints (as DragBench)
    [[np.int64(12), np.int64(6)], [np.int64(25), np.int64(9)]],   # numpy scalars
    np.array([[12, 6], [25, 9]], np.int32),                   # an array
], ids=["ints", "numpy-scalars", "array"])
def test_point_containers(tmp_path, points):
    s = load_sample(write_sample(tmp_path / "s", good_meta(points=points)))
    np.testing.assert_array_equal(s.handles, [[12, 6]])
    np.testing.assert_array_equal(s.targets, [[25, 9]])


@pytest.mark.parametrize("mask", [np.uint8(255), np.bool_(True)], ids=["0-255", "bool"])
def test_mask_spellings(tmp_path, mask):
    m = np.zeros((H, W), type(mask))
    m[2:4, 3:5] = mask
    s = load_sample(write_sample(tmp_path / "s", good_meta(mask=m)))
    assert s.mask.dtype == np.uint8
    np.testing.assert_array_equal(np.nonzero(s.mask), np.nonzero(m))
    assert set(np.unique(s.mask)) == {0, 255}


def test_points_on_the_image_edge_are_inside(tmp_path):
    # The outermost pixel centres are 0 and w-1; anything that rounds onto a pixel is inside.
    pts = [[-0.5, -0.5], [W - 0.51, H - 0.51]]
    s = load_sample(write_sample(tmp_path / "s", good_meta(points=pts)))
    np.testing.assert_array_equal(s.handles, [pts[0]])


def test_find_samples_recurses_and_sorts(tmp_path):
    for rel in ["b/two", "a/one/deeper", "a/one", "c"]:
        write_sample(tmp_path / rel)
    (tmp_path / "a" / "empty").mkdir()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "original_image.png").write_bytes(b"")     # no meta_data.pkl: not one
    assert find_samples(tmp_path) == [str(tmp_path / r) for r in
                                      ["a/one", "a/one/deeper", "b/two", "c"]]
    assert find_samples(tmp_path / "c") == [str(tmp_path / "c")]
    with pytest.raises(DragBenchError, match="not a directory"):
        find_samples(tmp_path / "nope")


# --- bad inputs and their exact messages -------------------------------------------------------

def expect(folder, message):
    with pytest.raises(DragBenchError) as info:
        load_sample(folder)
    assert str(info.value) == message


def test_missing_files(tmp_path):
    folder = write_sample(tmp_path / "s")
    os.remove(folder / "meta_data.pkl")
    expect(folder, f"missing meta_data.pkl in {folder}")
    folder = write_sample(tmp_path / "t")
    os.remove(folder / "original_image.png")
    expect(folder, f"missing original_image.png in {folder}")
    expect(tmp_path / "nowhere", f"missing original_image.png in {tmp_path / 'nowhere'}")


def test_unreadable_image(tmp_path):
    folder = write_sample(tmp_path / "s")
    (folder / "original_image.png").write_bytes(b"this is not a png")
    with pytest.raises(DragBenchError) as info:
        load_sample(folder)
    assert str(info.value).startswith(
        "original_image.png: not a readable image (UnidentifiedImageError: ")


def test_truncated_pickle(tmp_path):
    raw = pickle.dumps(good_meta(), protocol=4)
    with pytest.raises(DragBenchError) as info:
        load_sample(write_sample(tmp_path / "s", raw=raw[:100]))
    assert str(info.value).startswith("meta_data.pkl: not a readable pickle (")


@pytest.mark.parametrize("meta, message", [
    ([1, 2], "meta_data.pkl: expected a dict, got list"),
    ({"prompt": "x"}, "meta_data.pkl: missing keys points, mask"),
    ({"points": [], "mask": 0}, "meta_data.pkl: missing keys prompt"),
    (good_meta(prompt=3), "meta_data.pkl: prompt must be a str, got int"),
    (good_meta(points=[[1, 2]] * 5),
     "meta_data.pkl: 5 points; handles and targets must alternate, so the count must be even"),
    (good_meta(points=[]),
     "meta_data.pkl: no points; a sample needs at least one handle-target pair"),
    (good_meta(points="12,6"), "meta_data.pkl: points must be a list of [x, y], got str"),
    (good_meta(points=[[1, 2, 3], [4, 5, 6]]),
     "meta_data.pkl: points must be a list of [x, y] pairs of numbers"),
    (good_meta(points=[[1, 2], ["a", 3]]),
     "meta_data.pkl: points must be a list of [x, y] pairs of numbers"),
    (good_meta(points=[[1, 2], [3, 4], [5, 6], [40, 5]]),          # x = w: past the last pixel
     "meta_data.pkl: point 3 (target of pair 1) at x=40, y=5 lies outside the 40x30 image"),
    (good_meta(points=[[1, -0.6], [3, 4]]),
     "meta_data.pkl: point 0 (handle of pair 0) at x=1, y=-0.6 lies outside the 40x30 image"),
    (good_meta(points=[[1, 2], [3, 29.5]]),                        # y = h - 0.5
     "meta_data.pkl: point 1 (target of pair 0) at x=3, y=29.5 lies outside the 40x30 image"),
    (good_meta(points=[[1, 2], [float("nan"), 4]]),
     "meta_data.pkl: point 1 (target of pair 0) at x=nan, y=4 lies outside the 40x30 image"),
    (good_meta(mask=np.zeros((H, W + 1), np.uint8)),
     "meta_data.pkl: mask shape (30, 41) differs from the image's (30, 40)"),
    (good_meta(mask=np.zeros((W, H), np.uint8)),                   # transposed
     "meta_data.pkl: mask shape (40, 30) differs from the image's (30, 40)"),
    (good_meta(mask=np.zeros((H, W, 1), np.uint8)),
     "meta_data.pkl: mask shape (30, 40, 1) differs from the image's (30, 40)"),
    (good_meta(mask=np.full((H, W), 3, np.uint8)),
     "meta_data.pkl: mask values must be 0/1 or 0/255, found [3]"),
    (good_meta(mask=np.pad(np.array([[1, 255]], np.uint8), ((0, H - 1), (0, W - 2)))),
     "meta_data.pkl: mask values must be 0/1 or 0/255, found [0, 1, 255]"),
    (good_meta(mask=np.zeros((H, W), np.float32)),
     "meta_data.pkl: mask dtype float32 is not an integer type"),
    (good_meta(mask=[[0] * W] * H), "meta_data.pkl: mask must be a numpy array, got list"),
], ids=["not-dict", "missing-two", "missing-prompt", "prompt-type", "odd", "zero",
        "points-type", "points-triples", "points-text", "outside-x", "outside-y-negative",
        "outside-y-edge", "nan", "mask-wider", "mask-transposed", "mask-3d", "mask-values",
        "mask-mixed", "mask-float", "mask-list"])
def test_bad_meta(tmp_path, meta, message):
    expect(write_sample(tmp_path / "s", meta), message)


# --- pickles that try to run code ---------------------------------------------------------------

class Payload:
    """Unpickling this calls func(*args)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_os_system_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = Payload(os.system, f"touch {marker}")
    raw = pickle.dumps(good_meta(prompt=payload), protocol=4)

    # Control: the payload is real; an ordinary unpickler runs it.
    control = tmp_path / "control"
    assert pickle.loads(pickle.dumps(Payload(os.system, f"touch {control}"))) == 0
    assert control.exists()

    expect(write_sample(tmp_path / "s", raw=raw),
           f"meta_data.pkl: forbidden global {os.system.__module__}.system")
    assert os.system.__module__ in ("posix", "nt", "os")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("func, args, name", [
    (eval, ("1 + 1",), "builtins.eval"),
    (shutil.rmtree, ("/nonexistent-dragbench",), "shutil.rmtree"),
    (importlib.import_module, ("this",), "importlib.import_module"),
], ids=["eval", "rmtree", "import"])
def test_other_globals_are_refused(tmp_path, protocol, func, args, name):
    raw = pickle.dumps(good_meta(points=Payload(func, *args)), protocol=protocol)
    if protocol < 3 and name.startswith("builtins."):
        name = name.replace("builtins.", "__builtin__.")   # how protocols 0-2 spell it
    expect(write_sample(tmp_path / "s", raw=raw), f"meta_data.pkl: forbidden global {name}")


def test_subprocess_popen_is_refused(tmp_path):
    import subprocess

    marker = tmp_path / "pwned"
    raw = pickle.dumps({"mask": Payload(subprocess.Popen, ["touch", str(marker)])}, protocol=4)
    expect(write_sample(tmp_path / "s", raw=raw),
           "meta_data.pkl: forbidden global subprocess.Popen")
    assert not marker.exists()


def test_numpy_globals_other_than_arrays_are_refused(tmp_path):
    # numpy.load would read (and with allow_pickle, unpickle) a file the attacker names.
    raw = pickle.dumps(Payload(np.load, "/etc/hostname"), protocol=4)
    expect(write_sample(tmp_path / "s", raw=raw), "meta_data.pkl: forbidden global numpy.load")


def test_protocol_2_numpy_pickles_are_refused(tmp_path):
    # Below protocol 3 numpy stores array bytes through _codecs.encode, which is not admitted:
    # no DragBench file uses it, and the unpickler admits numpy array globals only.
    raw = pickle.dumps(good_meta(), protocol=2)
    expect(write_sample(tmp_path / "s", raw=raw), "meta_data.pkl: forbidden global _codecs.encode")
