"""Every notebook runs top to bottom in a fresh Jupyter kernel, as a user opening it in JupyterLab would.

The docs build (`tools/build_docs.py`) does exactly that for every notebook of the sidebar: nbclient starts the
venv's `python3` kernel (ipykernel) with the notebook's folder as working directory, on CPU, and runs the cells
`nbdev-test` would run (`#| eval: false` cells never, `#| slow` cells only in a `--slow` build; they hold the long
`Learner.fit` runs), plus the `show_doc` cells nbdev adds. So these tests read how each notebook ran in the build
of the current sources (`build_docs.executed_notebooks`, which builds the site first if it is stale) instead of
running every notebook a second time: one failure per notebook, with its cell and error.
Set KDBOOK_RERUN_NOTEBOOKS=1 to run each notebook again in its own kernel here (as before the build recorded it).
"""
import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import build_docs as bd

SLOW = os.environ.get('KDBOOK_SLOW') == '1'
RERUN = os.environ.get('KDBOOK_RERUN_NOTEBOOKS') == '1' or SLOW  # the build's record is of a build without slow cells

@pytest.fixture(scope='module')
def executed():
    if RERUN: return None
    try: return bd.executed_notebooks(ROOT)
    except bd.DocsBuildError as e: pytest.fail(f"the docs build stopped before running the notebooks:\n{e}", pytrace=False)

def _rerun(rel, monkeypatch):
    "Run notebook `nbs/rel` in a fresh kernel here"
    from nbdev.process import NBProcessor
    monkeypatch.chdir(ROOT)  # nbdev reads its config from pyproject.toml
    path = ROOT/'nbs'/rel
    nb = NBProcessor(path, rm_directives=False).nb  # directives parsed, sources untouched
    run = bd.executed_cells_filter(nb, slow=SLOW)
    src_idx = {id(c): i for i,c in enumerate(nb.cells)}
    try: bd.run_in_kernel(path, nb.cells, run, label=lambda c: f"cell {src_idx[id(c)]} (index in the .ipynb)")
    except bd.DocsBuildError as e: pytest.fail(str(e), pytrace=False)

@pytest.mark.parametrize('rel', bd.find_notebooks(ROOT/'nbs'))
def test_notebook_runs_in_fresh_kernel(rel, executed, monkeypatch):
    if executed is None: return _rerun(rel, monkeypatch)
    r = executed.get(rel)
    if r is None: pytest.fail(f"{rel} was not executed by the docs build: is it in _quarto.yml's sidebar?", pytrace=False)
    if not r['ok']: pytest.fail(r['error'], pytrace=False)

def test_build_runs_what_nbdev_test_runs(tmp_path, monkeypatch):
    "The build's cell filter is nbdev's: `eval: false` and `slow` cells skipped, `skip_exec` notebooks skipped"
    from nbdev.process import NBProcessor
    import json
    cells = [('x = 1', True), ('#| eval: false\nx = 2', False), ('#| slow\nx = 3', False), ('#| hide\nx = 4', True)]
    nbj = dict(cells=[dict(cell_type='code', source=s, metadata={}, outputs=[], execution_count=None) for s,_ in cells],
               metadata={}, nbformat=4, nbformat_minor=5)
    (tmp_path/'a.ipynb').write_text(json.dumps(nbj))
    monkeypatch.chdir(ROOT)  # nbdev's config (tst_flags) comes from pyproject.toml
    nb = NBProcessor(tmp_path/'a.ipynb', rm_directives=False).nb  # as the build and nbdev-test parse it
    run = bd.executed_cells_filter(nb)
    assert [run(c) for c in nb.cells] == [w for _,w in cells]
    assert all(bd.executed_cells_filter(nb, slow=True)(c) for c in nb.cells if 'eval' not in c.source)

def test_slow_outputs_are_saved_and_fresh():
    """The outputs of `slow` cells (the long runs the build skips, whose saved outputs the pages show) were made by the
    code the cells run now, and every slow cell that shows something has them. `make test-slow` saves them."""
    probs = bd.stale_slow_cells(ROOT)
    assert not probs, "run `make test-slow` (or `tools/build_docs.py --slow --save-slow NOTEBOOK`):\n" + '\n'.join(probs)
