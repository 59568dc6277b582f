"""The docs build stops with a clear message on bad sources: a notebook missing from `_quarto.yml`'s sidebar,
a sidebar entry without a notebook, a notebook whose cell fails (named with its notebook and cell)."""
import json, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import build_docs as bd

def _nb(*cells):
    "A minimal notebook of (cell_type, source) pairs"
    cs = [dict(cell_type=t, source=s, metadata={}, **({'outputs': [], 'execution_count': None} if t=='code' else {})) for t,s in cells]
    return json.dumps(dict(cells=cs, metadata={'kernelspec': {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}},
                           nbformat=4, nbformat_minor=5))

def _project(tmp_path, sidebar, nbs):
    (tmp_path/'nbs').mkdir()
    (tmp_path/'pyproject.toml').write_text('[project]\nname = "tmpbook"\n[tool.nbdev]\nlib_path = "tmpbook"\ntst_flags = "slow"\n')
    (tmp_path/'_quarto.yml').write_text(json.dumps({'project': {'type': 'website', 'output-dir': '_docs'},
        'website': {'title': 'tmpbook', 'sidebar': {'contents': sidebar}}}))
    for name, text in nbs.items():
        (tmp_path/'nbs'/name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path/'nbs'/name).write_text(text)
    return tmp_path

def test_sidebar_reading_order():
    cfg = {'website': {'sidebar': {'contents': ['index.ipynb', {'section': 'Book', 'contents': ['tutorials/02_a.ipynb']},
                                                {'section': 'API', 'contents': ['00_x.ipynb', '01_y.ipynb']}]}}}
    assert bd.sidebar_notebooks(cfg) == ['index.ipynb', 'tutorials/02_a.ipynb', '00_x.ipynb', '01_y.ipynb']
    assert bd.page_href('tutorials/02_a.ipynb') == 'tutorials/a.html'
    assert bd.page_href('03_models.ipynb') == 'models.html'

def test_notebook_missing_from_sidebar(tmp_path):
    root = _project(tmp_path, ['index.ipynb'], {'index.ipynb': _nb(('markdown', '# Home')), 'tutorials/02_new.ipynb': _nb(('markdown', '# New')),
                                                '_scratch.ipynb': _nb(('markdown', '# skipped'))})
    with pytest.raises(bd.DocsBuildError, match=r"missing from _quarto.yml's website.sidebar.*tutorials/02_new.ipynb"): bd.build(root)

def test_sidebar_entry_without_notebook(tmp_path):
    root = _project(tmp_path, ['index.ipynb', '05_gone.ipynb'], {'index.ipynb': _nb(('markdown', '# Home'))})
    with pytest.raises(bd.DocsBuildError, match=r"no notebook in nbs/.*05_gone.ipynb"): bd.build(root)

def test_missing_quarto_yml(tmp_path):
    with pytest.raises(bd.DocsBuildError, match='_quarto.yml not found'): bd.build(tmp_path)

def test_failing_cell_names_notebook_and_cell(tmp_path):
    root = _project(tmp_path, ['index.ipynb'], {'index.ipynb': _nb(('markdown', '# Home'), ('code', 'x = 1'),
        ('code', '#| slow\nraise RuntimeError("slow cells are skipped")'), ('code', 'assert x == 2, "x should be 2"'))})
    with pytest.raises(bd.DocsBuildError) as e: bd.build(root, renderer='sphinx', workers=1)
    msg = str(e.value)
    assert 'index.ipynb' in msg and 'cell 3 ' in msg and 'AssertionError: x should be 2' in msg, msg
    assert not (root/'_docs').exists()

def test_small_site_renders(tmp_path):
    "A page with math, a plot, a table and a link to another notebook, rendered offline by Sphinx"
    root = _project(tmp_path, ['index.ipynb', {'section': 'Book', 'contents': ['tutorials/01_plot.ipynb']}], {
        'index.ipynb': _nb(('markdown', '# Home\n> The summary, times $T^2$'), ('markdown', 'See [the plot chapter](tutorials/01_plot.ipynb#a-plot).'),
                           # like fastai's progress table: HTML and, for text front ends, its source as markdown
                           ('code', 'class Both:\n    def _repr_html_(self): return "<b class=\\"both\\">bold</b>"\n'
                                    '    def _repr_markdown_(self): return "```html\\n<b>bold</b>\\n```"\nBoth()')),
        'tutorials/01_plot.ipynb': _nb(('markdown', '# Plots'), ('markdown', '## A plot\n\nWith\n\n$$p_i = e^{z_i}/\\sum_j e^{z_j}$$'),
            ('code', 'import matplotlib.pyplot as plt\nimport pandas as pd'), ('code', 'plt.plot([1, 3, 2]);'),
            ('code', 'pd.DataFrame({"a": [1, 2]})'), ('code', '#| echo: false\n#| output: asis\nprint("### Asis heading\\n\\nsome *text*")'),
            ('code', '#| slow\n1/0'))})
    res = bd.build(root, renderer='sphinx', workers=1)
    site = root/'_docs'
    assert res['pages'] == ['index.html', 'tutorials/plot.html']
    idx, ch = (site/'index.html').read_text(), (site/'tutorials/plot.html').read_text()
    assert 'href="tutorials/plot.html#a-plot"' in idx and '<title>Home' in idx and 'tmpbook</title>' in idx
    assert '<b class="both">bold</b>' in idx and 'highlight-html' not in idx  # the HTML is shown, not its source
    assert '<p class="description">The summary, times <span class="math notranslate nohighlight">\\(T^2\\)</span>' in idx
    assert 'class="math notranslate nohighlight"' in ch and '<img' in ch and '<table' in ch and 'href="../index.html"' in ch
    assert '<span class="eqno">(1.1)' in ch  # numbered equations, with the chapter's number
    assert '<span class="section-number">1. </span>Plots' in ch  # numbered chapters
    assert '<section id="asis-heading">' in ch and '<em>text</em>' in ch  # `output: asis` is markdown on the page
    assert list((site/'_images').glob('*.png')) and (site/'_static/mathjax/tex-chtml.js').exists()  # offline math
    assert 'mathjax/tex-chtml.js' in ch and 'cdn.' not in ch
    # "download this notebook" serves the notebook itself
    assert (site/'_sources/tutorials/plot.ipynb').read_text() == (root/'nbs/tutorials/01_plot.ipynb').read_text()
    assert bd.is_fresh(root) and 'Plots' in (site/'searchindex.js').read_text()
    with pytest.raises(bd.DocsBuildError, match=r"no notebook in the sidebar matches \['nosuch'\]"):
        bd.build(root, out=tmp_path/'other', renderer='sphinx', workers=1, only=['nosuch'])
    res = bd.build(root, out=tmp_path/'other', renderer='sphinx', workers=1, only=['01_plot'])  # a stem selects it
    assert res['pages'] == ['tutorials/plot.html']
    assert not bd.is_fresh(root, tmp_path/'other') # some pages are not the site: the tests would find no build report

def test_sphinx_notebook():
    "Quarto's cell options become MyST-NB tags or markdown, front matter the title, notebook links their sources"
    from fastcore.nbio import dict2nb
    nb = dict2nb(json.loads(_nb(('raw', '---\ntitle: x\n---'), ('markdown', 'See [b](../02_b.ipynb#y) and [c](c.ipynb).'),
        ('code', '#| echo: false\nprint(1)'), ('code', '#| include: false\nsecret = 1'), ('code', '#| output: false\nx = 2\nx'),
        ('code', '#| echo: false\n#| output: asis\nshow_doc(f)'), ('code', ''))))
    nb.cells[2]['outputs'] = [dict(output_type='stream', name='stdout', text='1\n')]
    nb.cells[4]['outputs'] = [dict(output_type='execute_result', data={'text/plain': '2'}, metadata={}, execution_count=1)]
    nb.cells[5]['outputs'] = [dict(output_type='execute_result', data={'text/markdown': '---\n\n### f\n\n*Doc*', 'text/plain': 'x'},
                                   metadata={}, execution_count=2)]
    srcs = {'02_b.ipynb': 'b.ipynb', 'tutorials/04_a.ipynb': 'tutorials/a.ipynb'}
    cells = bd.sphinx_notebook(nb, 'tutorials/04_a.ipynb', {'title': 'The A', 'description': 'Sum $x$'}, srcs)['cells']
    assert [c['cell_type'] for c in cells] == ['markdown', 'markdown', 'code', 'code', 'markdown']
    assert cells[0]['source'] == '# The A\n\n{.description}\nSum $x$\n'
    assert cells[1]['source'] == 'See [b](../b.ipynb#y) and [c](c.ipynb).'  # an unknown target is left as it is
    assert cells[2]['metadata'] == {'tags': ['remove-input']} and cells[2]['source'] == 'print(1)' and cells[2]['outputs']
    assert cells[3]['source'] == 'x = 2\nx' and cells[3]['outputs'] == []
    assert cells[4]['source'] == '### f\n\n*Doc*'  # show_doc's rule is dropped: a section cannot start with one
    assert len({c['id'] for c in cells}) == len(cells)

def test_every_notebook_runs_and_is_reported(tmp_path):
    "A failing notebook does not stop the others; the report names each outcome, and the notebook tests read it"
    root = _project(tmp_path, ['index.ipynb', 'tutorials/01_bad.ipynb', 'tutorials/02_good.ipynb'], {
        'index.ipynb': _nb(('markdown', '# Home'), ('code', 'print("home ran")')),
        'tutorials/01_bad.ipynb': _nb(('markdown', '# Bad'), ('code', '1/0')),
        'tutorials/02_good.ipynb': _nb(('markdown', '# Good'), ('code', 'x = 1'))})
    with pytest.raises(bd.DocsBuildError, match=r"(?s)01_bad.ipynb: cell 1 .*ZeroDivisionError"): bd.build(root, renderer='sphinx', workers=2)
    rep = bd.exec_report(root)
    assert {r: (v['ok'], bool(v['error'])) for r, v in rep['executed'].items()} == {
        'index.ipynb': (True, False), 'tutorials/01_bad.ipynb': (False, True), 'tutorials/02_good.ipynb': (True, False)}
    assert not (root/'_docs').exists()
    assert bd.executed_notebooks(root) == rep['executed']  # no second build of the same failing sources
    (root/'nbs/tutorials/01_bad.ipynb').write_text(_nb(('markdown', '# Bad'), ('code', '1/1')))
    assert bd.exec_report(root) is None  # the sources changed: the old report is stale
    ex = bd.executed_notebooks(root)  # builds the site now (a subprocess), then reads its record
    assert all(v['ok'] for v in ex.values()) and len(ex) == 3 and bd.is_fresh(root)

def test_expects_output():
    for src in ['x = 1', 'test_eq(1, 1)', 'assert x', 'plt.plot(x);', 'runs = train(1)', '#| slow\nacc = 2']:
        assert bd.expects_output(src) == src.startswith('plt'), src
    for src in ['df', '#| slow\nres.head()', 'print(1)', 'for i in x: print(i)', 'ax = plot_curves(r)', 'x = f()\nx']:
        assert bd.expects_output(src), src

def test_slow_outputs_saved_and_stamped(tmp_path):
    "A `--slow --save-slow` build saves what slow cells showed, stamped; changing code above a slow cell stales it"
    nb = _nb(('markdown', '# Home'), ('code', 'x = 2'), ('code', '#| slow\nprint(x * 21)'), ('code', '#| slow\nassert x == 2'))
    root = _project(tmp_path, ['index.ipynb'], {'index.ipynb': nb})
    cells = json.loads(nb)['cells']
    for i,c in enumerate(cells): c['id'] = f'c{i}'
    (root/'nbs/index.ipynb').write_text(json.dumps({**json.loads(nb), 'cells': cells}))
    probs = bd.stale_slow_cells(root)
    assert len(probs) == 2 and 'cell 2 (print(x * 21)): no saved output' in probs[0] and 'never saved' in probs[1], probs
    bd.build(root, renderer='sphinx', workers=1, slow=True, save_slow=True)
    saved = json.loads((root/'nbs/index.ipynb').read_text())['cells']
    assert ''.join(saved[2]['outputs'][0]['text']) == '42\n' and saved[3]['outputs'] == [] and saved[3]['metadata']['kdbook']['inputs']
    assert not bd.stale_slow_cells(root)
    saved[1]['source'] = 'x = 3'  # the code above changed: both saved results are stale
    (root/'nbs/index.ipynb').write_text(json.dumps({**json.loads(nb), 'cells': saved}))
    assert [p.split(': ')[-1] for p in bd.stale_slow_cells(root)] == ['outputs older than its code'] * 2
    assert '42' in (root/'_docs/index.html').read_text()  # the site shows the saved output

def test_stamps_follow_the_modules_imports():
    "A slow cell's stamp covers the modules kdbook's own modules import (nbdev exports them as `from .x import`)"
    assert {'distill', 'teacher', 'losses', 'compat'} <= bd.kdbook_modules('from kdbook.distill import KDCallback')
    assert bd.kdbook_modules('import torch') == set()
