"""Build kdbook's docs site (the book) from the notebooks in nbs/ into _docs/.

    .venv/bin/python tools/build_docs.py                # Quarto if `quarto` is on PATH, else Sphinx (offline)
    .venv/bin/python tools/build_docs.py --slow --workers 1 tutorials/03_hinton.ipynb

One processing stage, two renderers. Every notebook listed in `_quarto.yml`'s sidebar is
1. processed by nbdev's own doc processors (`nbdev.processors.FilterDefaults`: front matter, automatic
   `show_doc` cells for exported names, `#| hide`/`#| export` removal, Quarto directives kept, doc links),
   with nbdev's `exec_show_docs` replaced by `ExecKernel`, which runs every cell `nbdev-test` would run
   (so not `#| eval: false` cells, nor `#| slow` ones unless `--slow`) in a fresh Jupyter kernel (nbclient),
   so the pages carry real outputs (tables, plots). A skipped `#| slow` cell keeps the outputs saved
   in the notebook. A failing cell stops its notebook; the others still run, then the build fails naming every
   failing notebook and cell. Which notebooks ran, and how, is saved in `_proc/kdbook-exec.json`: the notebook
   tests (tests/test_notebooks_kernel.py) read it instead of running every notebook a second time.
2. rendered either by Quarto through nbdev (`nbdev.quarto_render.render_quarto`, as `nbdev-docs` does), or,
   where Quarto is not installed, by Sphinx with MyST-NB and sphinx-book-theme, everything from PyPI: the
   notebooks become MyST-NB sources (`sphinx_notebook`: Quarto's cell options as MyST-NB tags), `_quarto.yml`'s
   sidebar becomes the home page's tables of contents, and `tools/sphinx/conf.py` configures the rest.
"""
from __future__ import annotations
import argparse, concurrent.futures as cf, hashlib, html, itertools, json, multiprocessing as mp, os, re, shutil
import subprocess, sys, tempfile, time
from contextlib import contextmanager
try: import fcntl
except ImportError: fcntl = None # Windows: no lock (run one build at a time)
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent

class DocsBuildError(Exception):
    "A problem with the sources that stops the docs build; the message says what to fix"

# ---------------------------------------------------------------- _quarto.yml and the sidebar
def load_quarto(root:Path=ROOT) -> dict:
    "Parsed `_quarto.yml` of `root`"
    p = Path(root)/'_quarto.yml'
    if not p.exists(): raise DocsBuildError(f"{p} not found: it holds the site's title, chapter order and sidebar.")
    return yaml.safe_load(p.read_text()) or {}

def _entries(contents) -> list:
    "Flatten sidebar `contents` (strings, {href:..}, {section:.., contents:[..]}) into (section, href) pairs"
    res = []
    for o in contents or []:
        if isinstance(o, str): res.append((None, o))
        elif isinstance(o, dict) and 'contents' in o:
            if o.get('href'): res.append((o.get('section'), o['href']))
            res += [(s or o.get('section'), h) for s,h in _entries(o['contents'])]
        elif isinstance(o, dict) and 'href' in o: res.append((None, o['href']))
        else: raise DocsBuildError(f"_quarto.yml: cannot read sidebar entry {o!r}; use a notebook path or a section with contents.")
    return res

def sidebar_entries(cfg:dict) -> list:
    "(section, notebook path relative to nbs/) pairs of `cfg`'s sidebar, in reading order (section None: top level)"
    sb = (cfg.get('website') or {}).get('sidebar')
    if isinstance(sb, list): sb = sb[0]
    if not sb or 'contents' not in sb: raise DocsBuildError("_quarto.yml has no website.sidebar.contents: list the notebooks in reading order there.")
    return _entries(sb['contents'])

def sidebar_notebooks(cfg:dict) -> list:
    "Notebook paths (relative to nbs/) in `cfg`'s sidebar, in reading order"
    return [h for _,h in sidebar_entries(cfg)]

def find_notebooks(nbs:Path) -> list:
    "Notebooks under `nbs` that nbdev documents (skips names starting with `_` or `.`, and checkpoints)"
    res = []
    for p in sorted(Path(nbs).rglob('*.ipynb')):
        rel = p.relative_to(nbs)
        if any(o.startswith(('_', '.')) for o in rel.parts): continue
        res.append(rel.as_posix())
    return res

def check_sidebar(root:Path=ROOT, cfg:dict=None) -> list:
    "Sidebar notebooks of `root`, raising `DocsBuildError` if nbs/ and `_quarto.yml`'s sidebar disagree"
    cfg = cfg if cfg is not None else load_quarto(root)
    nbs = Path(root)/'nbs'
    listed, found = sidebar_notebooks(cfg), find_notebooks(nbs)
    dups = sorted({o for o in listed if listed.count(o) > 1})
    missing = [o for o in found if o not in listed]
    absent = [o for o in listed if o not in found]
    msgs = []
    if missing: msgs.append("notebooks missing from _quarto.yml's website.sidebar (add them in reading order): " + ', '.join(missing))
    if absent: msgs.append("sidebar entries in _quarto.yml with no notebook in nbs/ (remove them or add the notebook): " + ', '.join(absent))
    if dups: msgs.append("sidebar entries listed twice in _quarto.yml: " + ', '.join(dups))
    if msgs: raise DocsBuildError('\n'.join(msgs))
    return listed

# ---------------------------------------------------------------- execution in a Jupyter kernel
def _is_slow(cell, flags=('slow',)) -> bool:
    return bool(set(flags) & set((getattr(cell, 'directives_', None) or {}).keys()))

def _first_lines(src:str, n:int=3) -> str:
    ls = [l for l in src.splitlines() if l.strip()]
    return '\n'.join('    '+l for l in ls[:n]) + ('\n    ...' if len(ls) > n else '')

def run_in_kernel(path, cells, should_run, timeout:int=900, label=None):
    """Execute `cells` (fastcore `NbCell`s) for which `should_run(cell)` in one fresh kernel (nbclient, the
    venv's `python3` kernel), cwd = the notebook's folder; outputs are stored in the cells. Raises
    `DocsBuildError` naming the notebook and cell at the first failure."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    path = Path(path)
    nb = nbformat.v4.new_notebook()
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    client = NotebookClient(nb, kernel_name='python3', timeout=timeout, allow_errors=False,
                            resources={'metadata': {'path': str(path.parent)}})
    with client.setup_kernel():
        for i,cell in enumerate(cells):
            if cell.cell_type != 'code' or not should_run(cell): continue
            node = nbformat.v4.new_code_cell(source=cell.source)
            nb.cells.append(node)
            try: client.execute_cell(node, len(nb.cells)-1)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
                where = label(cell) if label else f"cell {i}"
                msg = _ansi.sub('', str(e))
                m = list(re.finditer(r'^\w+(?:Error|Exception|Interrupt|Exit|Warning)\b.*$', msg, re.M))
                raise DocsBuildError(f"{path}: {where} failed to execute:\n{_first_lines(cell.source)}\n"
                                     f"{(msg[m[-1].start():][:1500] if m else msg[-2000:]).strip()}") from None
            cell['outputs'] = node.outputs
            cell['execution_count'] = node.get('execution_count')

def executed_cells_filter(nb, slow:bool=False):
    "Predicate for the cells `nbdev-test` would run (`--flags slow` when `slow`), as nbdev decides it"
    from fastcore.nbio import fm_default_eval, does_cell_eval
    from nbdev.frontmatter import nb_frontmatter
    from nbdev.config import get_config
    fm = nb_frontmatter(nb)
    flags = set() if slow else set(str(get_config().get('tst_flags', 'slow')).split())
    if str(fm.get('skip_exec', False)).lower() in ('true', '1', 'yes'): return lambda c: False
    dflt = fm_default_eval(fm)
    return lambda c: c.cell_type=='code' and does_cell_eval(c, dflt) and not _is_slow(c, flags)

def _exec_kernel_proc(slow, timeout, src_idx):
    from nbdev.process import Processor
    class ExecKernel(Processor):
        "nbdev doc processor: run the notebook in a fresh Jupyter kernel (replaces `exec_show_docs`)"
        def begin(self):
            run = executed_cells_filter(self.nb, slow)
            def label(c):
                i = src_idx.get(c.get('id'))
                return f"cell {i} (index in the .ipynb)" if i is not None else f"generated cell `{c.source.strip()}`"
            cells = list(self.nb.cells)
            if not any(run(c) for c in cells): return
            # `show_doc` is what nbdev's `exec_show_docs` imports first; the notebooks import it too
            from fastcore.nbio import mk_cell
            pre = mk_cell('from nbdev.showdoc import show_doc')
            run_in_kernel(self.nb.path_, [pre]+cells, lambda c: c is pre or run(c), timeout, label)
            # what each cell showed, by cell id, kept apart: nbdev's later processors drop `#| hide` cells
            self.nb.ran_ = {c.get('id'): c.get('outputs', []) for c in cells if run(c) and c.get('id')}
    return ExecKernel

def process_notebook(root, rel:str, slow:bool=False, timeout:int=900):
    "Notebook `nbs/rel` executed and processed by nbdev's doc processors, ready for Quarto or Sphinx"
    from fastcore.nbio import read_nb
    from nbdev.processors import FilterDefaults, exec_show_docs
    from nbdev.process import NBProcessor
    path = Path(root)/'nbs'/rel
    nb = read_nb(path)
    src_idx = {c.get('id'): i for i,c in enumerate(nb.cells)}
    ek = _exec_kernel_proc(slow, timeout, src_idx)
    fd = FilterDefaults()
    procs = [ek if p is exec_show_docs else p for p in fd.procs()]
    NBProcessor(nb=nb, procs=procs, rm_directives='quarto').process()
    return nb

# ---------------------------------------------------------------- notebook -> MyST-NB source (Sphinx)
_ansi = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')
_quarto_opt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')
_nb_link = re.compile(r'(\]\()([^)\s#]+\.ipynb)(#[^)\s]*)?(\))')

def _cell_opts(src:str):
    "Quarto cell options (`#| echo: false`) of `src`, and the source without them"
    opts, keep = {}, []
    for l in src.splitlines():
        m = _quarto_opt.match(l)
        if m and not keep: opts[m.group(1)] = m.group(2).strip('"\'').lower()
        else: keep.append(l)
    return opts, '\n'.join(keep).strip('\n')

def _text(v): return ''.join(v) if isinstance(v, list) else (v or '')

def _md_cell(src:str, **kw) -> dict: return dict(cell_type='markdown', metadata={}, source=src, **kw)

def _asis(outputs) -> str:
    "What Quarto's `output: asis` puts on the page: the cell's markdown (else plain) outputs, as markdown"
    res = []
    for o in outputs:
        if o.get('output_type') == 'stream': res.append(_text(o.get('text')))
        d = o.get('data') or {}
        if 'text/markdown' in d: res.append(_text(d['text/markdown']))
        elif 'text/plain' in d: res.append(_text(d['text/plain']))
    # show_doc's entries start with a rule (`---`), which docutils does not allow at the start of a section
    return re.sub(r'^---+\s*\n', '', '\n\n'.join(r.strip() for r in res if r.strip()))

def relink(md:str, rel:str, srcs:dict) -> str:
    "Links of notebook `rel`'s markdown `md` to other notebooks (`../06_prune.ipynb#x`) pointed at their sources `srcs`"
    here = Path(rel).parent
    def sub(m):
        tgt = os.path.normpath((here/m.group(2)).as_posix()).replace(os.sep, '/')
        if tgt not in srcs: return m.group(0)
        new = os.path.relpath(srcs[tgt], here.as_posix() or '.').replace(os.sep, '/')
        return f'{m.group(1)}{new}{m.group(3) or ""}{m.group(4)}'
    return _nb_link.sub(sub, md)

def sphinx_notebook(nb, rel:str, fm:dict, srcs:dict) -> dict:
    """Notebook `nbs/rel`, executed and processed by nbdev (front matter `fm`), as a MyST-NB source: its title and
    summary as the first cell, Quarto's cell options as MyST-NB tags (`echo: false` -> `remove-input`,
    `output: false` -> `remove-output`, `include: false` drops the cell), `output: asis` outputs (`show_doc`) as
    markdown cells, so their headings are sections of the page (in its contents, searchable, linkable), and links
    to other notebooks pointed at their sources `srcs` ({rel: source path})"""
    head = f"# {fm.get('title') or Path(rel).stem}\n"
    if fm.get('description'): head += f"\n{{.description}}\n{fm['description']}\n"
    cells = [_md_cell(head)]
    for c in nb.cells:
        src = _text(c.get('source'))
        if c.cell_type == 'markdown':
            if '<!-- WARNING: THIS FILE WAS AUTOGENERATED' in src: continue
            att = {'attachments': dict(c['attachments'])} if c.get('attachments') else {}
            cells.append(_md_cell(relink(src, rel, srcs), **att))
        if c.cell_type != 'code': continue # raw cells: nbdev's front matter, read into `fm`
        opts, code = _cell_opts(src)
        if opts.get('include') == 'false': continue
        outs = [] if opts.get('output') == 'false' else list(c.get('outputs', []))
        asis = opts.get('output') == 'asis'
        if code.strip() and opts.get('echo') != 'false' or outs and not asis:
            tags = (['remove-input'] if opts.get('echo') == 'false' or not code.strip() else [])
            cells.append(dict(cell_type='code', metadata={'tags': tags} if tags else {}, source=code,
                              outputs=[] if asis else outs, execution_count=c.get('execution_count')))
        if asis and (md := _asis(outs)): cells.append(_md_cell(md))
    for i,c in enumerate(cells): c['id'] = f'c{i}'
    return dict(cells=cells, metadata=dict(kernelspec=nb.metadata.get('kernelspec', {}), language_info={'name': 'python'}),
                nbformat=4, nbformat_minor=5)

def page_href(rel:str, fm:dict=None) -> str:
    "Output page of notebook `rel` (relative to nbs/), as nbdev names it (`03_models.ipynb` -> `models.html`)"
    out = (fm or {}).get('output-file')
    if not out:
        from nbdev.doclinks import nbpath2html
        out = nbpath2html(Path(rel)).name
    return (Path(rel).parent/out).as_posix()

def sphinx_source(rel:str, fm:dict=None) -> str:
    "Path of notebook `rel`'s MyST-NB source, named after its page (`03_models.ipynb` -> `models.ipynb`)"
    return Path(page_href(rel, fm)).with_suffix('.ipynb').as_posix()

_site_packages = re.compile(r'(?:/[^\s/:"\'<>]+)+/(?:site|dist)-packages/')

def hide_local_paths(nb, root):
    """Text outputs of `nb` without the paths of the machine that ran it: a warning's `/…/.venv/…/site-packages/torch/x.py`
    becomes `torch/x.py`, and the project's own files are named relative to `root` (`kdbook/prune.py`)"""
    root = str(Path(root).resolve()).rstrip('/') + '/'
    def fix(t):
        if isinstance(t, list): return [fix(x) for x in t]
        return _site_packages.sub('', t).replace(root, '') if isinstance(t, str) else t
    for c in nb.cells:
        for o in c.get('outputs', []) if c.get('cell_type') == 'code' else []:
            if 'text' in o: o['text'] = fix(o['text'])
            if 'traceback' in o: o['traceback'] = fix(o['traceback'])
            if 'text/plain' in o.get('data', {}): o['data']['text/plain'] = fix(o['data']['text/plain'])

def _process_worker(args):
    "Execute and process one notebook (in a worker process); writes it for Quarto (`stage/proc`) and Sphinx (`stage/src`)"
    root, rel, slow, timeout, stage, threads, srcs, save_slow = args
    if threads: os.environ.setdefault('OMP_NUM_THREADS', str(threads))
    t0, cwd = time.time(), os.getcwd()
    os.chdir(root)  # nbdev reads its settings from the project's pyproject.toml
    try: nb = process_notebook(root, rel, slow=slow, timeout=timeout)
    finally: os.chdir(cwd)
    hide_local_paths(nb, root)
    ran = nb.pop('ran_', None) or {} # (an AttrDict: the attribute is a key, not for the processed notebook)
    if save_slow:
        hide_local_paths(SimpleNamespace(cells=[dict(cell_type='code', outputs=o) for o in ran.values()]), root)
        save_slow_outputs(root, rel, ran)
    fm = getattr(nb, 'frontmatter_', {}) or {}
    from fastcore.nbio import write_nb
    proc = Path(stage)/'proc'/rel
    proc.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, proc)
    src = Path(stage)/'src'/sphinx_source(rel, fm)
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(json.dumps(sphinx_notebook(nb, rel, fm, srcs), indent=1))
    return dict(rel=rel, href=page_href(rel, fm), title=str(fm.get('title') or Path(rel).stem), seconds=round(time.time()-t0, 1))

# ---------------------------------------------------------------- Sphinx renderer
CONF = TOOLS/'sphinx'  # conf.py: the site's configuration

def toctree_markdown(cfg:dict, done:set=None) -> str:
    """The home page's (hidden) tables of contents: one per section of `_quarto.yml`'s sidebar, in its order, for
    the sidebar, prev/next links and chapter numbers. A section is numbered when its notebooks are all chapters
    of the book (in nbs/tutorials/). With `done`, only those notebooks are listed."""
    res = []
    for caption, grp in itertools.groupby(sidebar_entries(cfg), key=lambda e: e[0]):
        rels = [h for _,h in grp if h != 'index.ipynb'] # the home page holds the tables
        num = bool(rels) and all(r.startswith('tutorials/') for r in rels)
        rels = [r for r in rels if done is None or r in done]
        if not rels: continue
        opts = ':hidden:\n' + (':numbered:\n' if num else '') + (f':caption: {caption}\n' if caption else '')
        docs = '\n'.join(str(Path(sphinx_source(r)).with_suffix('')) for r in rels)
        res.append(f"```{{toctree}}\n{opts}\n{docs}\n```\n")
    return '\n'.join(res)

def _fix_links(text:str, page_href:str, site_url:str) -> str:
    """Links to the published site (nbdev's links of `KDCallback` to `{site_url}/distill.html#kdcallback`) made
    relative to `page_href`, with the anchor docutils gives the heading (`softtargetcache.to` -> `softtargetcache-to`)"""
    if not site_url: return text
    from docutils.nodes import make_id
    root, pre = _relroot(page_href), site_url.rstrip('/') + '/'
    def sub(m):
        path, _, frag = html.unescape(m.group(2))[len(pre):].partition('#')
        url = root + path + ('#' + make_id(frag) if frag else '')
        return f'{m.group(1)}"{html.escape(url, quote=True)}"'
    return re.sub(r'(\shref=)"(' + re.escape(pre) + r'[^"]*)"', sub, text)

def _relroot(href:str) -> str: return '../' * (len(Path(href).parts) - 1)

def render_sphinx(cfg:dict, results:list, stage:Path, site:Path, root:Path, strict:bool=True):
    """Render the MyST-NB sources in `stage/src` into `site` with Sphinx, configured by tools/sphinx/conf.py; `strict`:
    any warning (a link to a missing page or heading, bad markup) fails the build"""
    from sphinx.cmd.build import build_main
    web, src = cfg.get('website') or {}, stage/'src'
    title, idx = str(web.get('title', 'kdbook')), src/'index.ipynb'
    if not idx.exists(): # a build of some notebooks only (`only`): a bare home page holds their contents
        idx.write_text(json.dumps(dict(cells=[_md_cell(f"# {title}", id='c0')], metadata={}, nbformat=4, nbformat_minor=5)))
    nb = json.loads(idx.read_text())
    nb['cells'].append(_md_cell(toctree_markdown(cfg, {r['rel'] for r in results}), id='kdbook-toc'))
    idx.write_text(json.dumps(nb))
    args = ['-b', 'html', '-q', '-c', str(CONF), '-d', str(stage/'doctrees'), *(['-W', '--keep-going'] if strict else []),
            '-D', f'project={title}', '-D', f'html_title={title}',
            # the repository button needs a repository: an empty value turns it off
            '-D', f'html_theme_options.repository_url={web.get("repo-url", "")}',
            *([] if web.get('repo-url') else ['-D', 'html_theme_options.use_repository_button=']), str(src), str(site)]
    if build_main(args): raise DocsBuildError("Sphinx failed (its warnings, above, name the page and line): fix the "
                                              "notebook's markdown, or a link to a page or heading that does not exist.")
    site_url = str(web.get('site-url', ''))
    for r in results:
        page = site/r['href']
        page.write_text(_fix_links(page.read_text(), r['href'], site_url))
        # "download this notebook": the notebook itself, to run in JupyterLab (not the processed copy Sphinx read)
        shutil.copy2(Path(root)/'nbs'/r['rel'], site/'_sources'/sphinx_source(r['rel']))
    shutil.rmtree(site/'.doctrees', ignore_errors=True)

# ---------------------------------------------------------------- Quarto renderer (nbdev's path)
def render_quarto_site(root:Path, stage:Path, site:Path):
    "Render the processed notebooks with Quarto as `nbdev-docs` does (`_quarto.yml` staged beside them)"
    from nbdev.quarto_render import render_quarto
    from kdbook.compat import fix_quarto_nav # nbdev's private nav fix lives in kdbook's one compat module
    proc = stage/'proc'
    shutil.copy2(Path(root)/'_quarto.yml', proc/'_quarto.yml')
    for f in ('styles.css', '_brand.yml'):
        if (Path(root)/'nbs'/f).exists(): shutil.copy2(Path(root)/'nbs'/f, proc/f)
    render_quarto(proc, site)
    fix_quarto_nav(site)

# ---------------------------------------------------------------- API coverage check
class _TextParser(HTMLParser):
    "Visible text and h1-h4 headings of an HTML page (without Sphinx's `#` heading links)"
    def __init__(self):
        super().__init__(); self.text, self.heads, self._h, self._skip = [], [], None, []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ('script', 'style', 'nav') or tag == 'a' and 'headerlink' in (a.get('class') or '').split(): self._skip.append(tag)
        if tag in ('h1','h2','h3','h4'): self._h = [tag, a.get('id'), []]
    def handle_endtag(self, tag):
        if self._skip and tag == self._skip[-1]: self._skip.pop()
        if self._h and tag == self._h[0]:
            self.heads.append((self._h[0], self._h[1], ''.join(self._h[2]).strip())); self._h = None
    def handle_data(self, d):
        if self._skip: return
        self.text.append(d)
        if self._h: self._h[2].append(d)

def public_names(package:str='kdbook') -> dict:
    "{module: [names in its `__all__`]} for every module of `package` (from nbdev's `_modidx`)"
    import importlib
    modidx = importlib.import_module(f'{package}._modidx').d
    res = {}
    for mod in sorted(modidx['syms']):
        m = importlib.import_module(mod)
        res[mod] = list(getattr(m, '__all__', []))
    return res

_QUOTES = str.maketrans({'‘': "'", '’': "'", '“': '"', '”': '"', '…': '...', '–': '--', '—': '---'}) # Sphinx's typography
def _norm(s:str) -> str: return re.sub(r'\s+', ' ', re.sub(r'[`*]', '', s.translate(_QUOTES))).strip()

def check_api_docs(site:Path, package:str='kdbook', names:dict=None) -> list:
    """Problems with the API entries in built `site`: every function and class in each module's `__all__` needs a
    heading (`show_doc`), a signature (`def name(`/`class name`) and the first line of its docstring on one page."""
    import importlib, inspect
    names = names if names is not None else public_names(package)
    pages = {}
    for f in sorted(Path(site).rglob('*.html')):
        if '_screenshots' in f.parts or 'site_libs' in f.parts: continue
        tp = _TextParser(); tp.feed(f.read_text(errors='replace'))
        pages[f] = (tp.heads, _norm(''.join(tp.text)))
    probs = []
    for mod, nms in names.items():
        m = importlib.import_module(mod)
        for nm in nms:
            obj = getattr(m, nm, None)
            if not callable(obj): continue # constants (tuples of valid names, default dicts) are documented in the prose
            hits = [(f, text) for f,(heads,text) in pages.items() if any(h[2] == nm for h in heads)]
            if not hits: probs.append(f"{mod}.{nm}: no API entry (add `show_doc({nm})` after its definition)"); continue
            doc = (inspect.getdoc(obj) or '').strip().splitlines() if (inspect.isfunction(obj) or inspect.isclass(obj)) else []
            ok_sig = any(re.search(rf'(def|class)\s+{re.escape(nm)}\b', text) for _,text in hits) or not (inspect.isfunction(obj) or inspect.isclass(obj))
            if not ok_sig: probs.append(f"{mod}.{nm}: API entry without a signature")
            if doc and not any(_norm(doc[0]) in text for _,text in hits): probs.append(f"{mod}.{nm}: API entry without its docstring {doc[0]!r}")
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and not doc: probs.append(f"{mod}.{nm}: has no docstring")
    return probs

# ---------------------------------------------------------------- saved outputs of `slow` cells
# The build skips `#| slow` cells (long training runs), so their outputs on the page are the ones saved in the
# notebook by `--slow --save-slow` (`make test-slow`). Each saved cell carries the digest of the code it ran with, in
# its metadata (`kdbook.inputs`): tests/test_notebooks_kernel.py fails when that code has changed since.
# `from kdbook.data import ...` in a notebook; `from .data import ...` in the modules nbdev exports
_kdbook_import = re.compile(r'^\s*(?:from\s+(?:kdbook)?\.(\w+)\s+import|import\s+kdbook\.(\w+)|from\s+(?:kdbook|\.)\s+import\s+([\w, ]+))', re.M)

def kdbook_modules(src:str, root:Path=ROOT) -> set:
    "kdbook modules the code `src` imports, and those they import in turn (their files in `root/kdbook`)"
    todo, seen = [src], set()
    while todo:
        for m in _kdbook_import.finditer(todo.pop()):
            for name in filter(None, re.split(r'[,\s]+', m.group(1) or m.group(2) or m.group(3) or '')):
                f = Path(root)/'kdbook'/f'{name}.py'
                if name not in seen and f.exists(): seen.add(name); todo.append(f.read_text())
    return seen

def _cell_src(c) -> str: return _text(c.get('source'))

def slow_inputs_digest(cells:list, i:int, root:Path=ROOT) -> str:
    """Digest of what code cell `i` of a notebook's `cells` (its JSON) computes from: its source, the code cells above
    it, and the kdbook modules these import (with the modules those import)"""
    code = [_cell_src(c) for c in cells[:i+1] if c.get('cell_type') == 'code']
    h = hashlib.sha256('\0'.join(code).encode())
    for m in sorted(kdbook_modules('\n'.join(code), root)): h.update(m.encode()); h.update((Path(root)/'kdbook'/f'{m}.py').read_bytes())
    return h.hexdigest()[:16]

def _slow_cell(i:int, c:dict) -> bool:
    "Whether cell `i` (its JSON `c`) of a notebook is a code cell flagged `#| slow`, read the way nbdev reads directives"
    from fastcore.nbio import NbCell
    return c.get('cell_type') == 'code' and NbCell(i, c).has_directive('slow')

def expects_output(src:str) -> bool:
    """Whether code `src` shows something when it runs: it plots or prints, or ends in an expression (not one
    ending in `;`, nor a `test_*` check, which returns None)"""
    import ast
    code = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('#|', '%', '!')))
    try: tree = ast.parse(code)
    except SyntaxError: return True
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ''
            if name in ('print', 'display', 'plot', 'show', 'imshow', 'bar', 'scatter', 'hist') or name.startswith('plot_'): return True
    if not tree.body or not isinstance(tree.body[-1], ast.Expr) or code.rstrip().endswith(';'): return False
    v = tree.body[-1].value
    return not (isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id.startswith('test_'))

def save_slow_outputs(root:Path, rel:str, ran:dict) -> int:
    "Write the outputs `ran` ({cell id: outputs} of a run of nbs/`rel` with its `slow` cells) of its `slow` cells into it, stamped"
    path = Path(root)/'nbs'/rel
    nb = json.loads(path.read_text())
    n = 0
    for i,c in enumerate(nb['cells']):
        if not _slow_cell(i, c) or c.get('id') not in ran: continue
        c['outputs'] = [{**{k: v for k,v in dict(o).items() if k != 'execution_count'},
                         **({'execution_count': None} if o.get('output_type') == 'execute_result' else {})} for o in ran[c['id']]]
        c['execution_count'] = None
        c.setdefault('metadata', {})['kdbook'] = {'inputs': slow_inputs_digest(nb['cells'], i, root)}
        n += 1
    if n: write_ipynb(nb, path)
    return n

def write_ipynb(nb:dict, path:Path):
    "Write notebook `nb` (its JSON) at `path` as nbdev and Jupyter do: sorted keys, text outputs as lists of lines"
    import nbformat
    from nbformat.v4.rwbase import split_lines
    nb = split_lines(nbformat.from_dict(nb))
    Path(path).write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n')

def stale_slow_cells(root:Path=ROOT) -> list:
    """Problems with the saved outputs of the notebooks' `slow` cells: a cell that shows something has none, or its
    outputs were made by other code (its stamp differs from the digest of the code it runs now)"""
    probs = []
    for rel in find_notebooks(Path(root)/'nbs'):
        cells = json.loads((Path(root)/'nbs'/rel).read_text())['cells']
        for i,c in enumerate(cells):
            if not _slow_cell(i, c): continue
            src = _cell_src(c)
            first = next((l.strip() for l in src.splitlines() if l.strip() and not l.lstrip().startswith('#|')), '')
            where = f"nbs/{rel} cell {i} ({first[:60]})"
            if expects_output(src) and not c.get('outputs'): probs.append(f"{where}: no saved output"); continue
            stamp = (c.get('metadata', {}).get('kdbook') or {}).get('inputs')
            if stamp != slow_inputs_digest(cells, i, root):
                probs.append(f"{where}: {'outputs older than its code' if stamp else 'never saved by a slow run'}")
    return probs

# ---------------------------------------------------------------- freshness stamp
def source_digest(root:Path=ROOT, slow:bool=False) -> str:
    "Hash of everything the site is built from (notebooks, `_quarto.yml`, the package, this tool)"
    h = hashlib.sha256(f'slow={slow}'.encode())
    root = Path(root)
    files = [root/'_quarto.yml', root/'pyproject.toml', *sorted((root/'nbs').rglob('*.ipynb')), *sorted((root/'kdbook').glob('*.py'))]
    for f in files:
        if f.exists() and '.ipynb_checkpoints' not in f.parts: h.update(f.relative_to(root).as_posix().encode()); h.update(f.read_bytes())
    for f in [Path(__file__).resolve(), *sorted(p for p in CONF.rglob('*') if p.is_file() and '__pycache__' not in p.parts)]:
        h.update(f.name.encode()); h.update(f.read_bytes())
    return h.hexdigest()

def is_fresh(root:Path=ROOT, out:Path=None) -> bool:
    "Whether `out` (default _docs) is a complete site built from the current sources (a build of some pages is not)"
    out = Path(out or Path(root)/'_docs')
    st = out/'.build.json'
    if not st.exists(): return False
    try: d = json.loads(st.read_text())
    except ValueError: return False
    return d.get('complete', False) and d.get('digest') == source_digest(root, d.get('slow', False))

# ---------------------------------------------------------------- driver
def build(root:Path=ROOT, out:Path=None, renderer:str='auto', slow:bool=False, workers:int=None, timeout:int=None,
          only:list=None, log=print, save_slow:bool=False) -> dict:
    """Build the site of `root` into `out` (default `_docs`); returns a summary dict. `slow`: run the `slow` cells too;
    `save_slow`: and save their outputs, stamped, in the notebooks"""
    t0 = time.time()
    root = Path(root).resolve()
    out = Path(out or root/'_docs').resolve()
    cfg = load_quarto(root)
    cfg['_root'] = str(root)
    rels = check_sidebar(root, cfg)
    if renderer == 'auto': renderer = 'quarto' if shutil.which('quarto') else 'sphinx'
    if renderer == 'quarto' and not shutil.which('quarto'): raise DocsBuildError("quarto is not on PATH.")
    if timeout is None:
        try: from nbdev.config import get_config; timeout = int(get_config().get('cell_timeout', 900))
        except Exception: timeout = 900
    workers = max(1, min(workers or (os.cpu_count() or 1), len(rels)))
    threads = max(1, (os.cpu_count() or 1)//workers) if workers > 1 else None
    want = lambda r, o: o in (r, Path(r).stem, Path(r).with_suffix('').as_posix())
    unknown = [o for o in (only or []) if not any(want(r, o) for r in rels)]
    if unknown: raise DocsBuildError(f"no notebook in the sidebar matches {unknown}; give paths relative to nbs/ "
                                     f"(e.g. tutorials/02_soft_targets.ipynb) or stems (02_soft_targets)")
    todo = [r for r in rels if not only or any(want(r, o) for o in only)]
    stage = Path(tempfile.mkdtemp(prefix='kdbook-docs-', dir=root))
    try:
        log(f"Executing and processing {len(todo)} notebooks with {workers} worker(s){' (slow cells too)' if slow else ''} ...")
        # longest first, by the last build's times where there was one: a long notebook started last ends alone
        try: last = json.loads(_exec_report_path(root).read_text())['executed']
        except (OSError, ValueError, KeyError): last = {}
        order = sorted(todo, key=lambda r: -((last.get(r) or {}).get('seconds') or 0))
        srcs = {r: sphinx_source(r) for r in rels}
        args = [(str(root), r, slow, timeout, str(stage), threads, srcs, slow and save_slow) for r in order]
        results,errors = {},{}
        if workers == 1:
            for a in args:
                try: r = _process_worker(a)
                except DocsBuildError as e: errors[a[1]] = str(e); log(f"  {a[1]}: FAILED"); continue
                results[r['rel']] = r; log(f"  {r['rel']}: {r['seconds']} s")
        else:
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context('spawn')) as ex:
                futs = {ex.submit(_process_worker, a): a[1] for a in args}
                for f in cf.as_completed(futs):
                    # every notebook runs even when one fails: the report (and the tests) name each failure
                    try: r = f.result()
                    except DocsBuildError as e: errors[futs[f]] = str(e); log(f"  {futs[f]}: FAILED"); continue
                    results[r['rel']] = r; log(f"  {r['rel']}: {r['seconds']} s")
        digest = source_digest(root, slow)
        executed = {r: dict(ok=r in results, seconds=results[r]['seconds'] if r in results else None,
                            error=errors.get(r)) for r in todo}
        if not only: write_exec_report(root, dict(digest=digest, slow=slow, executed=executed))
        if errors: raise DocsBuildError('\n\n'.join(errors[r] for r in todo if r in errors))
        results = [results[r] for r in todo]
        site = stage/'site'
        log(f"Rendering with {renderer} ..."); t1 = time.time()
        if renderer == 'quarto': render_quarto_site(root, stage, site)
        else: render_sphinx(cfg, results, stage, site, root, strict=not only) # a partial build links to absent pages
        log(f"Rendered in {time.time()-t1:.1f} s")
        summary = dict(renderer=renderer, slow=slow, pages=[r['href'] for r in results], digest=digest,
                       seconds=round(time.time()-t0, 1), notebook_seconds={r['rel']: r['seconds'] for r in results},
                       complete=not only)
        (site/'.build.json').write_text(json.dumps(summary, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        shutil.move(str(site), str(out))
    finally: shutil.rmtree(stage, ignore_errors=True)
    probs = check_api_docs(out) if not only else []
    for p in probs: log(f"WARNING: {p}")
    log(f"Built {len(results)} pages into {out} with {renderer} in {summary['seconds']} s")
    return {**summary, 'api_problems': probs}

def _exec_report_path(root) -> Path: return Path(root)/'_proc'/'kdbook-exec.json'

def write_exec_report(root, rep:dict):
    "Save which notebooks the last complete build executed, and how each ended (`_proc/`, ignored by git)"
    p = _exec_report_path(root)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rep, indent=1))

def exec_report(root:Path=ROOT) -> dict|None:
    "The execution report of the last complete build, if it was made from the current sources"
    try: rep = json.loads(_exec_report_path(root).read_text())
    except (OSError, ValueError): return None
    return rep if rep.get('digest') == source_digest(root, rep.get('slow', False)) else None

@contextmanager
def _build_lock(root):
    "One build at a time per checkout (pytest-xdist workers ask for the site at once)"
    p = Path(root)/'_proc'/'.build.lock'
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, 'w') as f:
        if fcntl: fcntl.flock(f, fcntl.LOCK_EX)
        try: yield
        finally:
            if fcntl: fcntl.flock(f, fcntl.LOCK_UN)

def ensure_site(root:Path=ROOT, out:Path=None, timeout:int=3600) -> Path:
    "The built site of `root`: reused when it was built from the current sources, else built now (a subprocess)"
    out = Path(out or Path(root)/'_docs')
    with _build_lock(root):
        if is_fresh(root, out): return out
        rep = exec_report(root) if out == Path(root)/'_docs' else None
        if rep and not all(r['ok'] for r in rep['executed'].values()): # these very sources already failed to build
            raise DocsBuildError(f"the docs build of these sources failed; see {_exec_report_path(root)}")
        cmd = [sys.executable, str(Path(__file__).resolve()), '--root', str(root), '--out', str(out)]
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
        (Path(root)/'_proc'/'build.log').write_text(p.stdout + p.stderr) # the per-notebook times, kept for reading
        if p.returncode: raise DocsBuildError(f"`{' '.join(cmd)}` failed:\n{p.stderr[-6000:]}")
    return out

def executed_notebooks(root:Path=ROOT) -> dict:
    "How each notebook ran in the docs build of the current sources (`ok`, `seconds`, `error`): built if needed"
    try: ensure_site(root)
    except DocsBuildError:
        if exec_report(root) is None: raise # the build stopped before executing (e.g. a sidebar error): it says why
    return exec_report(root)['executed'] # written by every complete build, failed or not

def sidebar_pages(root:Path=ROOT) -> list:
    "Output pages of the sidebar's notebooks, in `_quarto.yml`'s order"
    return [page_href(r) for r in sidebar_notebooks(load_quarto(root))]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--renderer', choices=['auto', 'quarto', 'sphinx'], default='auto',
                    help="auto: Quarto (nbdev's path) if `quarto` is on PATH, else Sphinx with MyST-NB (offline)")
    ap.add_argument('--slow', action='store_true', help='also execute `#| slow` cells (else they keep their saved outputs)')
    ap.add_argument('--save-slow', action='store_true', help='with --slow: save the `slow` cells\' outputs, stamped, in the notebooks')
    ap.add_argument('--workers', type=int, default=None, help='notebooks executed in parallel (default: number of CPUs)')
    ap.add_argument('--timeout', type=int, default=None, help='seconds per cell (default: cell_timeout of pyproject)')
    ap.add_argument('--out', default=None, help='output folder (default: _docs of the project)')
    ap.add_argument('--root', default=str(ROOT), help='project root, holding _quarto.yml and nbs/ (default: this checkout)')
    ap.add_argument('--strict', action='store_true', help='fail when a public name has no API entry')
    ap.add_argument('--if-stale', action='store_true', help='do nothing if the output was built from the current sources')
    ap.add_argument('only', nargs='*', help='build only these notebooks (paths relative to nbs/, or stems)')
    a = ap.parse_args(argv)
    root = Path(a.root).resolve()
    if a.if_stale and not a.only and is_fresh(root, a.out):
        print(f"{a.out or '_docs'} is up to date"); return 0
    if a.save_slow and not a.slow: ap.error('--save-slow saves what --slow runs: give both')
    try: res = build(root, a.out and Path(a.out), a.renderer, a.slow, a.workers, a.timeout, a.only, save_slow=a.save_slow)
    except DocsBuildError as e:
        print(f"docs build failed: {e}", file=sys.stderr); return 1
    if a.strict and res['api_problems']: print("docs build failed: public names without API entries", file=sys.stderr); return 1
    return 0

if __name__ == '__main__':
    # run through the importable module `build_docs`, so worker processes can unpickle its functions and errors
    sys.path.insert(0, str(TOOLS))
    import build_docs
    sys.exit(build_docs.main())
