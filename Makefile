# kdbook's single entry point. `make demo` and `make test` need only python3 and pip: each creates (or reuses) the
# local virtual environment .venv and installs kdbook into it in editable mode with its dev extras.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# When the venv has no torch yet, torch 2.14.1 and torchvision 0.29.1 from PyPI are installed as a pair: they run on
# a CPU as on a GPU. On a GPU machine, install your own CUDA build of torch (2.9 to 2.14) into $(VENV) first: it is
# kept, and the torchvision release built for it (0.24 to 0.29) is added unless a working one is already there.
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.kdbook-installed

.PHONY: install demo test test-slow export docs lab clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	@# A torchvision that does not match torch fails at import ('operator torchvision::nms does not exist'), and with
	@# it `fastai.vision.all`: keep a torchvision whose ops load, else install the release made for this torch.
	@$(PY) -c "import torchvision.ops" 2>/dev/null || $(PY) -m pip install --quiet \
	  "$$($(PY) tools/torch_pair.py torchvision)" "$$($(PY) tools/torch_pair.py torch)"
	@# torch and torchvision stay pinned while the rest resolves, so that no dependency swaps them for other builds.
	$(PY) -m pip install --quiet -e ".[dev]" "$$($(PY) tools/torch_pair.py torch)" "$$($(PY) tools/torch_pair.py installed-torchvision)"
	@touch $@

install: $(STAMP)

# The main job: train the teacher and its students, print one table (defaults in settings.ini).
demo: $(STAMP)
	$(VENV)/bin/kdbook demo

export: $(STAMP)
	$(VENV)/bin/nbdev-export

# pytest over tests/, one worker per core (pytest-xdist; a test module stays on one worker, so its fixtures are made
# once). The docs build starts in the background at once: it runs every notebook once, in a fresh Jupyter kernel
# (cells flagged `slow` skipped), and records how each ran, which tests/test_notebooks_kernel.py turns into one test
# per notebook; the site's tests run last, the others meanwhile. (`nbdev-test` would run the same cells in-process a
# second time.) The build's log: _proc/build.log.
test: $(STAMP)
	@OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile -rs tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: that is a failure, not a pass" >&2; exit 1; fi; exit $$rc

# The long `slow` cells too: the docs build runs every notebook with them and saves what they show into the notebooks,
# stamped with the digest of the code they ran (the pages show these saved outputs; `make test` fails when that code
# has changed since), then the slow pytest tests run.
test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) tools/build_docs.py --slow --save-slow
	KDBOOK_SLOW=1 $(PY) -m pytest tests

# The book's website in _docs/: Quarto (nbdev's renderer) where it is installed, else Sphinx with MyST-NB and the book
# theme (tools/sphinx/conf.py), which the dev extras install from PyPI: nothing to install by hand.
docs: $(STAMP)
	$(PY) tools/build_docs.py

# Open the notebooks (the book's source) in JupyterLab, on the venv's Python 3 kernel (each notebook names it).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab nbs/ $$([ "$$(id -u)" = 0 ] && echo --allow-root) # root (a container) needs the flag

clean:
	rm -rf _docs _proc .pytest_cache
