# Two commands matter: `make demo` (offline CPU fine-tune of the tiny model) and `make test`.
# Both set up .venv first; torch is the CPU build pinned in the README.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/arzan train recipes/smoke.yaml --overwrite

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/throughput.py --recipe recipes/smoke.yaml --mode cpu
