# The front door: `make run` and `make test` work on a fresh machine with Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is rebuilt when the project's dependencies change, so an existing .venv is reused.
STAMP  := $(VENV)/.fedbus-installed

.PHONY: install run test lint typecheck unit bench bench-peers bench-codec bench-transport bench-secagg bench-fleet bench-compression bench-large bench-lora docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a looser request would resolve a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,torch,ray,llm]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/fedbus run $(ARGS)

lint: install
	$(BIN)/ruff format --check src tests bench examples docs
	$(BIN)/ruff check src tests bench examples docs

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

test: lint typecheck unit

bench: install
	$(BIN)/python bench/simulation.py
	$(BIN)/python bench/torch_cnn.py

# Installs Flower into bench/.venv-peers (once) and runs the same workloads through it.
bench-peers: install
	$(BIN)/python bench/peers.py

docs: install
	$(BIN)/python docs/update_config_reference.py

bench-secagg: install
	$(BIN)/python bench/secagg.py

bench-codec: install
	$(BIN)/python bench/codec.py

bench-compression: install
	$(BIN)/python bench/compression.py

bench-large: install
	$(BIN)/python bench/large.py

bench-transport: install
	$(BIN)/python bench/transport.py

# One server, 1,000 / 5,000 / 10,000 client nodes from 4 processes: admission, idle cost, rounds.
bench-fleet: install
	$(BIN)/python bench/fleet.py

# Federated LoRA against full fine-tuning: bytes per round (tiny model and GPT-2 small's shape).
bench-lora: install
	$(BIN)/python bench/lora.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
