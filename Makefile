# factlens: two commands on a fresh machine.
#   make demo  -> set up .venv and run the main job on the embedded Gemma 3 270M (writes results/)
#   make test  -> set up .venv and run the full test suite (incl. slow Gemma tests, docs build, notebook)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
OUT ?= results/sports-athlete-editing
# pytest worker processes of make test (pytest-xdist); each loads its own copy of the slow tests' model
TEST_WORKERS ?= 2
# reference data (never copied into the repo): used by the demo when present
SHARED ?= ../shared/data
DEMO_DATA := $(if $(wildcard $(SHARED)/wikitext2/test.txt),--text-source $(SHARED)/wikitext2/test.txt) \
             $(if $(wildcard $(SHARED)/mmlu/dev),--mmlu-source $(SHARED)/mmlu/dev)

.PHONY: setup demo test test-fast docs notebook bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	# torch first, from the local CPU wheel: keeps pip from pulling a CUDA build
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	# 32 forget facts (not the paper's 16): at 16, only differences of ~0.4-0.8 in accuracy are
	# detectable (docs/statistics.md); 2 worker processes use both cores (docs/performance.md)
	$(BIN)/factlens run sports-athlete-editing --model gemma-3-270m --forget-size 32 --workers 2 --out $(OUT) $(DEMO_DATA)

test: setup
	# two pytest workers, one test file each at a time (module fixtures such as the edited Gemma
	# stay computed once): 28 min 21 s against 36 min 56 s in one process, same machine (README)
	$(BIN)/python -m pytest tests factlens -m "slow or not slow" -q --timeout=1800 -n $(TEST_WORKERS) --dist loadfile
	# the quantization attack against bitsandbytes itself, installed beside the venv, not in it:
	# TransformerLens imports bitsandbytes whenever it is installed (+120 MB, +3 s per process)
	$(BIN)/pip install -q --no-deps --upgrade --target build/bitsandbytes "bitsandbytes>=0.43"
	FACTLENS_TEST_BITSANDBYTES=1 PYTHONPATH=build/bitsandbytes $(BIN)/python -m pytest tests/evaluation/test_attacks.py -q -k bitsandbytes
	$(BIN)/factlens run planted --model planted --no-progress --out build/planted --overwrite
	$(BIN)/mkdocs build --strict -q -d build/site
	$(BIN)/python -m jupytext --to ipynb --output build/explore_circuits.ipynb examples/explore_circuits.py
	$(BIN)/python -c "import nbformat, nbclient; nb = nbformat.read('build/explore_circuits.ipynb', 4); nbclient.NotebookClient(nb, timeout=600, kernel_name='python3').execute(); nbformat.write(nb, 'build/explore_circuits.executed.ipynb'); print('notebook executed')"

test-fast: setup
	$(BIN)/python -m pytest tests factlens -m "not slow" -q -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(BIN)/python benchmarks/localize.py
	$(BIN)/python benchmarks/edit.py

clean:
	rm -rf $(VENV) build results .pytest_cache
