"""JupyterLab is a place to read the book: a chapter opens on its own kernel, with no dialog, and all its cells run.

Starts `jupyter lab` (the `lab` extra; the dev extras bring it too) on 127.0.0.1 over a copy of the first chapter, opens
the chapter in headless Chromium (Debian's `chromium`, driven by Playwright, as in tests/test_docs_browser.py), runs
"Run All Cells" and fails on a dialog (such as "Select Kernel", which a notebook without a kernelspec gets), on an
error output, or on a cell left without its execution count.
"""
import json, os, shutil, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = 'tutorials/02_soft_targets.ipynb' # the book's first chapter: no `slow` cell, so "Run All" is what CI runs
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_docs_browser import CHROMIUM, FLAGS, sync_api, pytestmark as needs_browser  # the same browser, or the same skip
pytest.importorskip('jupyterlab', reason="JupyterLab is missing: `pip install -e '.[dev]'` (or `make lab`) brings it")
from kdbook.launch import free_port

def test_every_notebook_names_a_python3_kernel():
    "No notebook opens with JupyterLab's 'Select Kernel' dialog: each names the Python 3 kernel"
    bad = [p.relative_to(ROOT).as_posix() for p in sorted((ROOT/'nbs').rglob('*.ipynb'))
           if json.loads(p.read_text()).get('metadata', {}).get('kernelspec', {}).get('name') != 'python3']
    assert not bad, f"notebooks without the python3 kernelspec: {bad}"

@pytest.fixture(scope='module')
def lab():
    "JupyterLab serving a copy of the chapter (and settings.ini, which the chapter reads), so nothing in nbs/ is written"
    with tempfile.TemporaryDirectory(prefix='kdbook-lab-') as d:
        (Path(d)/CHAPTER).parent.mkdir(parents=True)
        shutil.copy2(ROOT/'nbs'/CHAPTER, Path(d)/CHAPTER)
        shutil.copy2(ROOT/'settings.ini', Path(d)/'settings.ini')
        port, token = free_port(), 'kdbook-test'
        cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
               f'--ServerApp.root_dir={d}', f'--IdentityProvider.token={token}', '--LabApp.expose_app_in_browser=True',
               '--LabApp.news_url=None', '--ServerApp.port_retries=0']
        if hasattr(os, 'getuid') and os.getuid() == 0: cmd.append('--allow-root')
        env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(Path(d)/'.jupyter'), 'JUPYTERLAB_SETTINGS_DIR': str(Path(d)/'.lab-settings'),
               'JUPYTERLAB_WORKSPACES_DIR': str(Path(d)/'.lab-workspaces'), 'OMP_NUM_THREADS': '1'}
        proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        url = f'http://127.0.0.1:{port}'
        try:
            for _ in range(120):
                if proc.poll() is not None: pytest.fail(f"jupyter lab exited: {proc.stdout.read()[-3000:]}")
                try: urllib.request.urlopen(f'{url}/api/status?token={token}', timeout=2); break
                except OSError: time.sleep(0.5)
            else: pytest.fail("jupyter lab did not answer within 60 s")
            yield url, token
        finally:
            proc.terminate()
            try: proc.wait(20)
            except subprocess.TimeoutExpired: proc.kill()

_STATE = """() => {
  const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!nb || !nb.content || !nb.sessionContext) return null;
  const cells = nb.content.widgets.filter((c) => c.model.type === 'code').map((c) => ({
    count: c.model.executionCount, src: c.model.sharedModel.getSource().slice(0, 80),
    errors: c.model.outputs.toJSON().filter((o) => o.output_type === 'error').map((o) => o.ename + ': ' + o.evalue)}));
  return {kernel: nb.sessionContext.session && nb.sessionContext.session.kernel && nb.sessionContext.session.kernel.name,
          status: nb.sessionContext.session && nb.sessionContext.session.kernel && nb.sessionContext.session.kernel.status,
          dialogs: Array.from(document.querySelectorAll('.jp-Dialog')).map((d) => d.innerText.slice(0, 200)), cells};
}"""

@needs_browser
def test_chapter_runs_in_jupyterlab(lab):
    "The chapter opens on the python3 kernel without a dialog, and 'Run All Cells' runs every cell without an error"
    url, token = lab
    with tempfile.TemporaryDirectory(prefix='kdbook-chromium-') as profile, sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                   viewport={'width': 1400, 'height': 1000})
        page = ctx.new_page()
        errors = []
        page.on('pageerror', lambda e: errors.append(str(e)))
        page.goto(f'{url}/lab/tree/{CHAPTER}?token={token}')
        page.wait_for_function(f"(() => {{ const s = ({_STATE})(); return s && (s.status === 'idle' || s.dialogs.length) }})()",
                               timeout=90_000) # the kernel is up, or a dialog asks for one
        st = page.evaluate(_STATE)
        assert st['kernel'] == 'python3' and not st['dialogs'], st
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        # done: every cell ran, or one failed (JupyterLab then stops the run there)
        done = (f"(() => {{ const s = ({_STATE})(); return s.status === 'idle' && "
                f"(s.cells.every((c) => c.count !== null || !c.src.trim()) || s.cells.some((c) => c.errors.length)) }})()")
        page.wait_for_function(done, timeout=300_000, polling=1000)
        st = page.evaluate(_STATE)
        ctx.close()
    errs = [(c['src'], c['errors']) for c in st['cells'] if c['errors']]
    assert not errs, f"cells with an error output: {errs}"
    assert not st['dialogs'], st['dialogs']
    assert all(c['count'] is not None for c in st['cells'] if c['src'].strip()), st['cells']
    assert not errors, errors
