import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The tests that read the built site (and so wait for the docs build, a few minutes on 2 cores) run last; with
# several pytest-xdist workers the build starts in the background at the start of the session, so that it runs
# while the workers run every other test.
SITE = ('test_docs_api.py', 'test_docs_browser.py', 'test_notebooks_kernel.py')

def pytest_collection_modifyitems(config, items):
    "Tests marked `slow` run only with KDBOOK_SLOW=1 (`make test-slow`); the site's tests last"
    if os.environ.get('KDBOOK_SLOW') != '1':
        skip = pytest.mark.skip(reason='slow: run with KDBOOK_SLOW=1 (make test-slow)')
        for item in items:
            if 'slow' in item.keywords: item.add_marker(skip)
    items.sort(key=lambda item: item.path.name in SITE)  # stable: the order inside each module is kept

def pytest_sessionstart(session):
    "On the pytest-xdist controller: start building the site (`build_docs.ensure_site`, locked, a no-op if fresh)"
    if os.environ.get('PYTEST_XDIST_WORKER') or not getattr(session.config.option, 'numprocesses', None): return
    tests = Path(__file__).resolve().parent
    asked = {(Path(session.config.invocation_params.dir)/a.split('::')[0]).resolve() for a in session.config.args}
    if not asked & {tests, *(tests/f for f in SITE)}: return # a run of other test files: no site needed
    code = f"import sys; sys.path.insert(0, {str(ROOT/'tools')!r}); import build_docs; build_docs.ensure_site()"
    session.config._kdbook_build = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def pytest_sessionfinish(session):
    "Never leave the background build running (its failure is reported by the site's tests, which ran it too)"
    p = getattr(session.config, '_kdbook_build', None)
    if p is not None and p.poll() is None: p.wait()
