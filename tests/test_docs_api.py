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
