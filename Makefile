# Quick start: `make toy` (the whole system in a toy world, about 20 minutes on 2 CPU cores) and
# `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
CACHE ?= .cache
TORCH_PIN := $(shell grep -oE '^ *torch==[0-9.]+' setup.cfg | tr -d ' ')
COTRACKER_PIN := $(shell sed -n 's/^cotracker *= *//p' setup.cfg)
DEMO ?= demo
TOY ?= toy
TOY_CLIPS ?= 128
TOY_HELDOUT_CLIPS ?= 32
TOY_TRAIN_ARGS ?=
TOY_EVAL_ARGS ?=

.PHONY: setup toy demo edit-demo train-demo test test-fast browser bench bench-edit bench-train \
	bench-gpu bench-serve vendor-cotracker clean

setup: $(VENV)/.installed

# torch goes first so pip takes the local CPU wheel instead of the CUDA build.
$(VENV)/.installed: setup.cfg
	python3 -m venv $(VENV)
	$(PIP) "$(TORCH_PIN)"
	$(PIP) -e ".[test]"
	touch $@

# CoTracker is not on PyPI; unpack its official code from the wheel that vendors it, without
# installing that wheel or its dependencies. Tests put $(CACHE)/vendor on sys.path.
vendor-cotracker: $(CACHE)/vendor/cotracker/__init__.py

$(CACHE)/vendor/cotracker/__init__.py: setup.cfg | setup
	rm -rf $(CACHE)/wheels $(CACHE)/vendor && mkdir -p $(CACHE)/wheels $(CACHE)/vendor
	$(PY) -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 3.12 -d $(CACHE)/wheels "$(COTRACKER_PIN)"
	$(PY) -c "import zipfile,glob; z=zipfile.ZipFile(glob.glob('$(CACHE)/wheels/*.whl')[0]); \
		z.extractall('$(CACHE)/vendor', [n for n in z.namelist() if n.startswith('cotracker/')])"
	test -f $@

# The end-to-end proof in a toy world: synthetic videos -> pairs (local Ray) -> a small
# pixel-space model trained from scratch -> evaluation on held-out pairs against the untrained
# model and the identity edit. Reruns resume (pairs, training) or redo (videos, evaluation).
# TOY_CLIPS, TOY_HELDOUT_CLIPS, TOY_TRAIN_ARGS (e.g. --set train.steps=2) and TOY_EVAL_ARGS
# (e.g. --steps 2) shrink it for tests.
TOY_SAMPLING := --scheduler ddim --steps 10 --guidance 4 --schedule inverse-square --keep-unmasked \
	--resolution 64 --seeds 2
TOY_MODEL := --resolution 64 --pixel-vae-factor 4 --block-out-channels 96,128,128 \
	--prediction-type sample --point-embed-dim 8
toy: setup
	$(PY) -m jobs.make_videos --output $(TOY)/videos --toy $(TOY_CLIPS)
	$(PY) -m jobs.make_videos --output $(TOY)/heldout-videos --toy $(TOY_HELDOUT_CLIPS) --seed 100000
	$(PY) -m jobs.build_pairs --input $(TOY)/videos --output $(TOY)/pairs --config configs/toy-pairs.yaml
	$(PY) -m jobs.build_pairs --input $(TOY)/heldout-videos --output $(TOY)/heldout \
		--config configs/toy-pairs.yaml --set sample.pairs_per_video=2
	test -d $(TOY)/checkpoints || $(PY) -m jobs.make_tiny_model --out $(TOY)/checkpoints $(TOY_MODEL)
	test -d $(TOY)/extractors || $(PY) -m jobs.make_tiny_extractors --out $(TOY)/extractors
	TORCH_EXTENSIONS_DIR=$(CACHE)/torch_extensions $(PY) -m jobs.train --config configs/toy-train.yaml \
		--set run_dir=$(TOY)/train --set data.shards=$(TOY)/pairs --set model.checkpoints=$(TOY)/checkpoints \
		$(TOY_TRAIN_ARGS)
	$(PY) -m jobs.evaluate --bench pairs --data $(TOY)/heldout --out $(TOY)/eval \
		--checkpoints $(TOY)/checkpoints \
		--model-dir "$$(ls -d $(TOY)/train/checkpoints/step_* | tail -n 1)/lightning-drag-sd15" \
		--compare untrained=$(TOY)/checkpoints --tracker patch $(TOY_SAMPLING) \
		--alexnet $(TOY)/extractors/alexnet.pth --lpips $(TOY)/extractors/lpips-alex-v0.1.pth \
		$(TOY_EVAL_ARGS)

demo: setup
	$(PY) -m jobs.make_videos --output $(DEMO)/videos --repeat 2 --bad-inputs
	$(PY) -m jobs.build_pairs --input $(DEMO)/videos --output $(DEMO)/pairs

# Tiny random checkpoints in the public layout, then one drag edit of a DragBench sample.
edit-demo: setup
	test -d $(DEMO)/checkpoints || $(PY) -m jobs.make_tiny_model --out $(DEMO)/checkpoints
	$(PY) -m jobs.edit --checkpoints $(DEMO)/checkpoints --resolution 128 --candidates 2 \
		--image tests/fixtures/dragbench/animals/JH_2023-09-14-1823-59 --out $(DEMO)/edit

# Train the tiny model on the demo pairs for a few steps (CPU, one process); resumes if rerun.
train-demo: demo
	test -d $(DEMO)/checkpoints || $(PY) -m jobs.make_tiny_model --out $(DEMO)/checkpoints
	TORCH_EXTENSIONS_DIR=$(CACHE)/torch_extensions $(PY) -m jobs.train --config configs/train-tiny.yaml

test: setup vendor-cotracker browser
	$(PY) -m pytest -q -rs

# The browser tests (tests/serve/test_ui.py) drive Debian's Chromium with its ChromeDriver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

test-fast: setup vendor-cotracker
	$(PY) -m pytest -q -m "not slow"

bench: setup vendor-cotracker
	$(PY) bench/pipeline.py

bench-edit: setup
	$(PY) bench/edit.py

bench-train: setup
	$(PY) bench/train.py

bench-serve: setup
	$(PY) bench/serve.py

# Every GPU figure in one run, on a machine with one GPU (bench/RESULTS.md says where each goes).
bench-gpu: setup vendor-cotracker
	PYTHONPATH=$(CACHE)/vendor $(PY) bench/gpu.py

clean:
	rm -rf $(VENV) $(CACHE) $(DEMO) $(TOY)
