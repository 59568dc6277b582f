"""Every notebook runs top to bottom in a fresh Jupyter kernel, as a user opening it in JupyterLab would.

nbclient starts the venv's `python3` kernel (ipykernel) with the notebook's folder as working directory, on
CPU. Cells run as `nbdev-test` picks them: `#| eval: false` cells never, `#| slow` cells only with
KDBOOK_SLOW=1 (they hold the long `Learner.fit` runs; a user opening the notebook runs them too).
"""
import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import build_docs as bd

SLOW = os.environ.get('KDBOOK_SLOW') == '1'

@pytest.mark.parametrize('rel', bd.find_notebooks(ROOT/'nbs'))
def test_notebook_runs_in_fresh_kernel(rel, monkeypatch):
    from fastcore.nbio import read_nb
    from nbdev.process import NBProcessor
    monkeypatch.chdir(ROOT)  # nbdev reads its config from pyproject.toml
    path = ROOT/'nbs'/rel
    nb = NBProcessor(path, rm_directives=False).nb  # directives parsed, sources untouched
    run = bd.executed_cells_filter(nb, slow=SLOW)
    src_idx = {id(c): i for i,c in enumerate(nb.cells)}
    try: bd.run_in_kernel(path, nb.cells, run, label=lambda c: f"cell {src_idx[id(c)]} (index in the .ipynb)")
    except bd.DocsBuildError as e: pytest.fail(str(e), pytrace=False)
