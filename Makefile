# kdbook's single entry point. `make demo` and `make test` need only python3 and pip: each creates (or reuses) the
# local virtual environment .venv and installs kdbook into it in editable mode with its dev extras.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch is installed when the venv has no torch yet. On a GPU machine, install your own CUDA
# build into $(VENV) first: an existing torch is kept as it is.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.kdbook-installed

.PHONY: install demo test test-slow export docs apt-pandoc lab clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	@# The torch in the venv is pinned while the rest resolves, so that no dependency (fastai asks for torchvision)
	@# swaps it for another build, e.g. a newer CUDA one.
	$(PY) -m pip install --quiet -e ".[dev]" "torch==$$($(PY) -c 'import torch; print(torch.__version__)')"
	@touch $@

install: $(STAMP)

# The main job: train the teacher and its students, print one table (defaults in settings.ini).
demo: $(STAMP)
	$(VENV)/bin/kdbook demo

export: $(STAMP)
	$(VENV)/bin/nbdev-export

# Every notebook through nbdev's test runner (cells flagged `slow` skipped), then pytest over tests/.
# One torch thread per notebook worker: nbdev runs the notebooks in parallel, one per core.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/nbdev-test --n-workers 2
	@$(PY) -m pytest tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: that is a failure, not a pass" >&2; exit 1; fi; exit $$rc

# The same, with the long `slow` cells of the notebooks and the slow pytest tests.
test-slow: $(STAMP)
	$(VENV)/bin/nbdev-test --flags slow --n-workers 1
	KDBOOK_SLOW=1 $(PY) -m pytest tests

# The book's website in _docs/: Quarto (nbdev's renderer) where it is installed, else pandoc (apt-get install pandoc).
docs: $(STAMP)
	@command -v quarto >/dev/null || command -v pandoc >/dev/null || $(MAKE) --no-print-directory apt-pandoc
	$(PY) tools/build_docs.py

apt-pandoc:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then apt-get update -qq && apt-get install -y -qq pandoc; \
	 else echo "make docs needs Quarto or pandoc: install one (e.g. sudo apt-get install pandoc)" >&2; exit 1; fi

# Open the notebooks (the book's source) in JupyterLab.
lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,lab]" "torch==$$($(PY) -c 'import torch; print(torch.__version__)')"
	$(VENV)/bin/jupyter lab nbs/

clean:
	rm -rf _docs _proc .pytest_cache
