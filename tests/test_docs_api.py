"""Every public name of kdbook (each module's `__all__`) has an API entry in the built site: a `show_doc`
heading, its signature and the first line of its docstring."""
import sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import build_docs as bd

def test_check_api_docs_finds_missing_entries(tmp_path):
    "The check itself: a documented name passes, an undocumented one, or one without signature, is reported"
    (tmp_path/'api.html').write_text('<h3 id="load_file">load_file</h3><pre><code>def load_file(fn:str)</code></pre>'
                                     '<p><em>Load the file at `fn`</em></p><h3 id="dumps">dumps</h3><p>no signature</p>')
    names = {'json': ['dumps', 'loads']}
    probs = bd.check_api_docs(tmp_path, names=names)
    assert any(p.startswith('json.loads: no API entry') for p in probs), probs
    assert any(p.startswith('json.dumps: API entry without a signature') for p in probs), probs
    assert not bd.check_api_docs(tmp_path, names={'json': []})

def test_public_names_are_read_from_modidx():
    names = bd.public_names('kdbook')
    assert 'kdbook.losses' in names and 'kd_loss' in names['kdbook.losses']

def test_every_public_name_has_an_api_entry():
    try: site = bd.ensure_site(ROOT)
    except bd.DocsBuildError as e: pytest.fail(f"docs build failed: {e}")
    probs = bd.check_api_docs(site)
    assert not probs, 'public names without a complete API entry:\n' + '\n'.join(probs)

def test_no_page_shows_the_builders_paths():
    "Warnings under a cell name `torch/jit/_script.py`, not the absolute path of the venv of the machine that built the site"
    try: site = bd.ensure_site(ROOT)
    except bd.DocsBuildError as e: pytest.fail(f"docs build failed: {e}")
    bad = {p.relative_to(site).as_posix(): [m for m in (str(ROOT), 'site-packages/') if m in p.read_text(errors='replace')]
           for p in site.rglob('*.html')}
    assert not {k: v for k, v in bad.items() if v}, bad

def test_hide_local_paths():
    from fastcore.basics import AttrDict
    out = {'output_type': 'stream', 'text': [f'{ROOT}/.venv/lib/python3.11/site-packages/torch/jit/_script.py:1: W\n',
                                            f'{ROOT}/kdbook/prune.py:242: UserWarning\n']}
    err = {'output_type': 'error', 'traceback': ['/usr/lib/python3/dist-packages/x.py:3']}
    nb = AttrDict(cells=[AttrDict(cell_type='code', outputs=[out, err])])
    bd.hide_local_paths(nb, ROOT)
    assert out['text'] == ['torch/jit/_script.py:1: W\n', 'kdbook/prune.py:242: UserWarning\n']
    assert err['traceback'] == ['x.py:3']
