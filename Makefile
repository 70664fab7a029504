# Quick start: `make demo` (set up, generate clips, build pairs on a local Ray) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
CACHE ?= .cache
TORCH_PIN := $(shell grep -oE '^ *torch==[0-9.]+' setup.cfg | tr -d ' ')
COTRACKER_PIN := $(shell sed -n 's/^cotracker *= *//p' setup.cfg)
DEMO ?= demo

.PHONY: setup demo test test-fast bench vendor-cotracker clean

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

demo: setup
	$(PY) -m jobs.make_videos --output $(DEMO)/videos --repeat 2 --bad-inputs
	$(PY) -m jobs.build_pairs --input $(DEMO)/videos --output $(DEMO)/pairs

test: setup vendor-cotracker
	$(PY) -m pytest -q -rs

test-fast: setup vendor-cotracker
	$(PY) -m pytest -q -m "not slow"

bench: setup vendor-cotracker
	$(PY) bench/pipeline.py

clean:
	rm -rf $(VENV) $(CACHE) $(DEMO)
