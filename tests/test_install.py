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
