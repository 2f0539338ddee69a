# The front door: `make run` and `make test` work on a fresh machine with Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# The stamps are rebuilt when the project's dependencies change, so an existing .venv is reused.
# `make run` needs fedbus alone (NumPy, matplotlib, scikit-learn's digits): seconds to install.
# Everything else (the test tools, PyTorch, Ray, the LLM extra) comes with the first target that
# needs it.
BASE   := $(VENV)/.fedbus-base
FULL   := $(VENV)/.fedbus-full
BROWSER := $(VENV)/.fedbus-browser
# apt-get needs root: sudo when not root already
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-all browser run test lint typecheck unit bench bench-peers bench-codec bench-transport bench-secagg bench-fleet bench-compression bench-large bench-lora bench-published docs docs-results clean

$(BASE): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(BASE)

$(FULL): $(BASE)
	# torch first and pinned: a looser request would resolve a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,torch,ray,llm,data,tracking]'
	touch $(FULL)

install: $(BASE)

install-all: $(FULL)

# The dashboard's browser tests drive a headless Chromium with its driver, from Debian's
# packages: installed when missing, never downloaded by Selenium.
$(BROWSER): Makefile
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; }
	touch $(BROWSER)

browser: $(BROWSER)

run: install
	$(BIN)/fedbus run $(ARGS)

lint: install-all
	$(BIN)/ruff format --check src tests bench examples docs
	$(BIN)/ruff check src tests bench examples docs

typecheck: install-all
	$(BIN)/mypy

# One test process per core; the tests that use Ray share one of them (tests/conftest.py).
unit: install-all $(BROWSER)
	$(BIN)/pytest -n auto --dist loadgroup

test: lint typecheck unit

bench: install-all
	$(BIN)/python bench/simulation.py
	$(BIN)/python bench/torch_cnn.py

# Installs Flower into bench/.venv-peers (once) and runs the same workloads through it.
bench-peers: install-all
	$(BIN)/python bench/peers.py

docs: install-all
	$(BIN)/python docs/update_config_reference.py

# Reruns every example config (a few minutes) and rewrites the results table of docs/algorithms.md.
docs-results: install-all
	$(BIN)/python docs/update_results.py

bench-secagg: install-all
	$(BIN)/python bench/secagg.py

bench-codec: install-all
	$(BIN)/python bench/codec.py

bench-compression: install-all
	$(BIN)/python bench/compression.py

bench-large: install-all
	$(BIN)/python bench/large.py

bench-transport: install-all
	$(BIN)/python bench/transport.py

# One server, 1,000 / 5,000 / 10,000 client nodes from 4 processes: admission, idle cost, rounds.
bench-fleet: install-all
	$(BIN)/python bench/fleet.py

# Federated LoRA against full fine-tuning: bytes per round (tiny model and GPT-2 small's shape).
bench-lora: install-all
	$(BIN)/python bench/lora.py

# Reruns the published experiments of docs/results.md (about 10 minutes on one core).
bench-published: install-all
	$(BIN)/python bench/published_mnist1d.py
	$(BIN)/python bench/published_fedprox.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
