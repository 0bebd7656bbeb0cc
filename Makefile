# Two entry points: `make run` (the main job) and `make test`. Both create or refresh .venv by themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml tests/train/transformers4.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/compat/transformers4 -r tests/train/transformers4.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/starchat chat

test: $(STAMP)
	$(BIN)/python -m pytest

# About 20 minutes on an idle 2-core machine, plus one build of llama-server (cached in .runs/bench).
bench: $(STAMP)
	$(BIN)/python bench/data_bench.py
	$(BIN)/python bench/infer_bench.py --repeats 3
	$(BIN)/python bench/serve_bench.py --only llama-server
	$(BIN)/python bench/eval_bench.py --generate 8 --max-new-tokens 256
	$(BIN)/python bench/train_bench.py --dialogues 96 --repeats 2
	$(BIN)/python bench/busy_bench.py --steps 3

clean:
	rm -rf $(VENV) .runs
