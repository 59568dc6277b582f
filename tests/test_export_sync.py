"The notebooks are the source of truth: exporting them must reproduce the committed kdbook/ exactly."
import filecmp, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_export_reproduces_the_package(tmp_path):
    for p in ('nbs', 'kdbook'): shutil.copytree(ROOT/p, tmp_path/p, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints', '_docs'))
    for p in ('pyproject.toml', 'settings.ini', 'README.md'): shutil.copy(ROOT/p, tmp_path/p)
    exe = Path(sys.executable).with_name('nbdev-export')
    r = subprocess.run([str(exe)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    exported = sorted(p.relative_to(tmp_path/'kdbook') for p in (tmp_path/'kdbook').rglob('*.py'))
    committed = sorted(p.relative_to(ROOT/'kdbook') for p in (ROOT/'kdbook').rglob('*.py'))
    assert exported == committed, f'modules differ: {set(exported) ^ set(committed)}'
    differ = [str(p) for p in exported if not filecmp.cmp(tmp_path/'kdbook'/p, ROOT/'kdbook'/p, shallow=False)]
    assert not differ, f'kdbook/ disagrees with the notebooks in {differ}: edit the notebook, run nbdev-export, commit both'
    assert (tmp_path/'pyproject.toml').read_text() == (ROOT/'pyproject.toml').read_text(), 'nbdev-export rewrote pyproject.toml'
