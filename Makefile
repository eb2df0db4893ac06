# How GPT Works: one command to learn, one to test. Needs only Python >= 3.10 and make.
#   make lab     set everything up, then open JupyterLab on lessons/ (as a learner sees it)
#   make test    set everything up, then run ruff and the whole test suite
# Both are idempotent: set-up reruns only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
# Pinned: an unpinned `torch` can pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.gptcore-installed

# Tests and CI read Tiny Shakespeare from ../shared/data when it exists (never the network).
ifneq ($(wildcard ../shared/data/tinyshakespeare.txt),)
export GPTCORE_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: setup sandbox-tool lab lab-instructor test lint lessons check-lessons grade bench clean

setup: $(STAMP) sandbox-tool

# The grading sandbox (gptcore class autograde) uses bubblewrap. Installed with apt-get
# when running as root and missing; skipped quietly otherwise (grading then reports
# that the sandbox was off).
sandbox-tool:
	@command -v bwrap >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
	  ! command -v apt-get >/dev/null 2>&1 || { \
	    echo "installing bubblewrap (the grading sandbox) with apt-get"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && \
	      apt-get install -y -qq bubblewrap >/dev/null 2>&1; } || \
	    echo "note: bubblewrap not installed; grading will run without a sandbox"; }

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "Python >= 3.10 is needed; run: make PYTHON=python3.11 ..."; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[course,dev]"
	@# A benchmark peer whose declared dependencies (TensorFlow among them) we do not need.
	$(BIN)/python -m pip install --quiet --no-deps llms-from-scratch==1.0.19
	@# Fetch the corpus now so the lessons also work offline later (skipped quietly if offline).
	-@$(BIN)/gptcore data tinyshakespeare >/dev/null 2>&1 || \
	  echo "note: Tiny Shakespeare not fetched (offline?); the lessons will fetch it on first use"
	@touch $(STAMP)

# A learner's JupyterLab on lessons/: nbgrader's Validate button, none of its instructor
# panels or exchange pages (bin/lab says how; tests/lessons/test_browser.py starts the same script).
# More Jupyter options: make lab LAB_ARGS="--no-browser --port=8890"
lab: setup
	VENV=$(VENV) bin/lab $(LAB_ARGS)

# The same with every nbgrader panel (Formgrader, Create Assignment, Assignment/Course List).
lab-instructor: setup
	VENV=$(VENV) GPTCORE_LAB=instructor bin/lab $(LAB_ARGS)

lint: setup
	$(BIN)/ruff check .

# Two workers: most of the time goes into executing notebooks, one kernel per core.
# worksteal: a worker that runs out takes tests from the other's queue (with the default
# split, one worker ran notebooks for a quarter of an hour while the other sat idle); the
# slowest tests are listed at the end, to see where the time goes.
test: lint
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=25

# Instructor: regenerate lessons/ from solutions/ (via a temporary directory).
lessons: setup
	$(BIN)/gptcore release

check-lessons: setup
	$(BIN)/gptcore release --check

# Learner: make grade LESSON=01_tokenization
grade: setup
	$(BIN)/gptcore grade lessons/$(LESSON)

bench: setup
	$(BIN)/python benchmarks/bench_tokenizer.py
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_train.py throughput

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
