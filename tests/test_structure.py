"""The package's structure, checked: one job per module (no module over 450 lines), no private name imported across
modules, fastai's and nbdev's private APIs used in `kdbook.compat` only, pyflakes clean, lines of at most 120
characters, and neither the tutorials nor the benchmarks importing the CLI (they read settings through
`kdbook.settings`)."""
import ast, json, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p for p in (ROOT/'kdbook').glob('*.py') if p.name != '_modidx.py')

def _code_lines(p):
    return [l for l in p.read_text().splitlines()]

def test_no_module_over_450_lines():
    big = {p.name: n for p in MODULES if (n := len(_code_lines(p))) > 450}
    assert not big, f"modules with more than one job? {big}"

def test_lines_at_most_120_characters():
    long = [f"{p.name}:{i}" for p in MODULES for i, l in enumerate(_code_lines(p), 1)
            if len(l) > 120 and not l.startswith('__all__ = [')]  # nbdev writes and wraps `__all__` itself
    assert not long, f"lines over 120 characters: {long}"

def _imports(p):
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, ast.ImportFrom): yield node.module or '', node.level, [a.name for a in node.names]

def test_no_private_name_crosses_a_module():
    bad = [f"{p.name}: from {'.'*lvl}{mod} import {n}" for p in MODULES for mod, lvl, names in _imports(p)
           for n in names if n.startswith('_') and not n.startswith('__') and (lvl or mod.startswith('kdbook'))]
    assert not bad, bad

PRIVATE_API = re.compile(r'_with_events|\bget_idxs\s*=|def _broadcast|_Annealer|_fix_quarto_nav')

def test_fastai_private_apis_live_in_compat_only():
    "Private names imported from fastai, fastcore or nbdev, and the private methods kdbook overrides, in compat only"
    bad = [f"{p.name}: from {mod} import {n}" for p in MODULES if p.name != 'compat.py' for mod, lvl, names in _imports(p)
           for n in names if n.startswith('_') and mod.split('.')[0] in ('fastai', 'fastcore', 'nbdev')]
    bad += [f"{p.name}:{i}" for p in [*MODULES, ROOT/'tools'/'build_docs.py'] if p.name != 'compat.py'
            for i, l in enumerate(_code_lines(p), 1) if PRIVATE_API.search(l)]
    assert not bad, bad

def test_pyflakes_clean():
    pytest.importorskip('pyflakes', reason="pyflakes is a dev extra: pip install -e '.[dev]'")
    p = subprocess.run([sys.executable, '-m', 'pyflakes', *map(str, MODULES)], capture_output=True, text=True)
    # fastai patches classes on import: `import fastai.callback.schedule` for `Learner.fit_one_cycle` is used, unseen
    probs = [l for l in p.stdout.splitlines() if not re.search(r"'fastai\.[\w.]+' imported but unused", l)]
    assert not probs, '\n'.join(probs)

def test_tutorials_and_benchmarks_do_not_import_the_cli():
    srcs = {p: ''.join(''.join(c['source']) for c in json.loads(p.read_text())['cells'])
            for p in (ROOT/'nbs'/'tutorials').glob('*.ipynb')}
    srcs.update({p: p.read_text() for p in (ROOT/'benchmarks').glob('*.py')})
    bad = [str(p.relative_to(ROOT)) for p, s in srcs.items() if re.search(r'\bkdbook\.cli\b|from kdbook import cli', s)]
    assert not bad, f"import kdbook.settings or kdbook.pipeline instead of the CLI: {bad}"

def test_every_notebook_opens_with_a_python3_kernel():
    "JupyterLab opens each chapter on the venv's Python 3 kernel instead of asking which kernel to start"
    nbs = sorted((ROOT/'nbs').glob('*.ipynb')) + sorted((ROOT/'nbs'/'tutorials').glob('*.ipynb'))
    bad = [str(p.relative_to(ROOT)) for p in nbs
           if json.loads(p.read_text())['metadata'].get('kernelspec', {}).get('name') != 'python3']
    assert nbs and not bad, f"notebooks without a python3 kernelspec: {bad}"

def test_home_page_lists_every_chapter():
    "index.ipynb links every other notebook of the book, so a reader finds every chapter from the home page"
    src = ''.join(''.join(c['source']) for c in json.loads((ROOT/'nbs'/'index.ipynb').read_text())['cells']
                  if c['cell_type'] == 'markdown')
    nbs = [p.relative_to(ROOT/'nbs').as_posix() for p in sorted((ROOT/'nbs').rglob('*.ipynb'))
           if p.name != 'index.ipynb' and not p.name.startswith('_') and '.ipynb_checkpoints' not in p.parts]
    missing = [n for n in nbs if f']({n})' not in src and f']({n}#' not in src]
    assert nbs and not missing, f"chapters the home page does not link: {missing}"

def test_no_markdown_line_starts_like_a_list_number():
    "A wrapped line that starts with '2020.' or '2020)' becomes an ordered list starting at 2020 in pandoc and Quarto"
    import json, re
    bad = []
    for p in sorted((ROOT/'nbs').rglob('*.ipynb')):
        for i, c in enumerate(json.loads(p.read_text())['cells']):
            if c['cell_type'] != 'markdown': continue
            lines = ''.join(c['source']).split('\n')
            bad += [f"{p.relative_to(ROOT)} cell {i}: {l[:60]!r}" for l in lines if re.match(r'\s*\d{3,}[.)]\s', l)]
    assert not bad, 'reflow these lines so that the number is not at the start:\n' + '\n'.join(bad)
