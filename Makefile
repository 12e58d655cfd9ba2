# Two entry points (see README): `make test` and `make generate`. Both create .venv on first use.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PROMPT  ?= a red circle moves to the left
PYTEST_ARGS ?=
ARGS    ?=

.PHONY: venv test lint generate serve bench clean-venv

# torch 2.13.0 (CPU) is served from this machine's local package store. `make generate` installs what
# generation needs (.[generate]); `make test` adds the training and test extras and the reference
# implementation ltx-video==0.1.2, installed without its dependencies (they pin old transformers/huggingface-hub
# and pull a CUDA torch; its model, scheduler and pipeline modules need only what [test] installs).
# The LTX-2 references ltx-core/ltx-pipelines 1.0.0 are installed the same way: they want torchaudio, which has
# no wheel that loads beside torch 2.13, so tests/conftest.py puts an import stub
# (tests/ltx2/stubs/torchaudio) on the path; scipy is for ltx_core.components.schedulers' import.
$(BIN)/.stamp-generate: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[generate]'
	touch $@

$(BIN)/.stamp: $(BIN)/.stamp-generate
	$(BIN)/pip install -q -e '.[train,text,test]'
	$(BIN)/pip install -q --no-deps ltx-video==0.1.2
	$(BIN)/pip install -q scipy
	$(BIN)/pip install -q --no-deps ltx-core==1.0.0 ltx-pipelines==1.0.0
	touch $@

venv: $(BIN)/.stamp

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS) tests --nbmake notebooks/demo.ipynb

lint: venv
	$(BIN)/ruff check .

generate: $(BIN)/.stamp-generate
	$(BIN)/python -m infer.generate 'prompts=["$(PROMPT)"]' $(ARGS)

# The HTTP service on the bundled demo (CPU); prints its URL. ARGS: e.g. port=8000 model=ltx2-demo
$(BIN)/.stamp-serve: $(BIN)/.stamp-generate
	$(BIN)/pip install -q -e '.[serve]'
	touch $@

serve: $(BIN)/.stamp-serve
	$(BIN)/python -m infer.serve $(ARGS)

bench: venv
	$(BIN)/python tools/bench_dit.py

clean-venv:
	rm -rf $(VENV)
