"Install metadata: the package, its version, its console script and a deterministic set of dependency bounds."
import importlib.metadata as md, re, tomllib
from pathlib import Path
import kdbook

ROOT = Path(__file__).resolve().parents[1]

def test_version_matches_metadata():
    assert md.version('kdbook') == kdbook.__version__

def test_console_script_entry_point():
    eps = [e for e in md.entry_points(group='console_scripts') if e.name == 'kdbook']
    assert eps and eps[0].value == 'kdbook.cli:kdbook_cli'
    assert callable(eps[0].load())

def _bounded(req):
    "A requirement is pinned (==) or has both a lower and an upper bound"
    spec = re.split(r'[\s;]', req, maxsplit=1)[0]
    return '==' in spec or ('>=' in spec and '<' in spec.replace('<=', '<'))

def test_every_dependency_is_bounded():
    proj = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
    reqs = proj['dependencies'] + [r for extra in proj['optional-dependencies'].values() for r in extra]
    loose = [r for r in reqs if not _bounded(r)]
    assert not loose, f'unbounded requirements make the install drift: {loose}'

def test_nbdev_reads_pyproject():
    from nbdev.config import get_config
    cfg = get_config(ROOT)
    assert cfg.lib_name == 'kdbook' and cfg.lib_path == ROOT/'kdbook' and cfg.nbs_path == ROOT/'nbs'

def _torch_pair():
    import importlib.util
    spec = importlib.util.spec_from_file_location('torch_pair', ROOT/'tools'/'torch_pair.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

def test_torchvision_release_for_each_torch():
    "The Makefile's rule: torchvision 0.(minor+15) for torch 2.minor, a local build label ignored, others refused"
    tp = _torch_pair()
    assert tp.torchvision_for('2.14.1') == 'torchvision==0.29.*'
    assert tp.torchvision_for('2.11.0+cu130') == 'torchvision==0.26.*'
    assert tp.torchvision_for('2.9.1') == 'torchvision==0.24.*'
    import pytest
    with pytest.raises(SystemExit, match='tested with torch 2.9 to 2.14'): tp.torchvision_for('2.15.0')

def test_installed_torch_and_torchvision_are_a_pair():
    "A torchvision built for another torch fails at import ('operator torchvision::nms does not exist')"
    tv, t = md.version('torchvision').split('+')[0], md.version('torch').split('+')[0]
    assert int(tv.split('.')[1]) == int(t.split('.')[1]) + 15, f"torch {t} with torchvision {tv}: not a matching pair"

def test_fastai_vision_imports():
    "The first line of most fastai notebooks, and torchvision's compiled ops, work in this environment (fresh process)"
    import subprocess, sys
    code = ("from fastai.vision.all import *\nimport torch, torchvision\n"
            "b = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]])\n"
            "print(torchvision.ops.nms(b, torch.tensor([1., .5]), .5).tolist())")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == '[0]'
