"""Build kdbook's docs site (the book) from the notebooks in nbs/ into _docs/.

    .venv/bin/python tools/build_docs.py                # Quarto if `quarto` is on PATH, else pandoc (offline)
    .venv/bin/python tools/build_docs.py --renderer pandoc --slow --workers 1

One processing stage, two renderers. Every notebook listed in `_quarto.yml`'s sidebar is
1. processed by nbdev's own doc processors (`nbdev.processors.FilterDefaults`: front matter, automatic
   `show_doc` cells for exported names, `#| hide`/`#| export` removal, Quarto directives kept, doc links),
   with nbdev's `exec_show_docs` replaced by `ExecKernel`, which runs every cell `nbdev-test` would run
   (so not `#| eval: false` cells, nor `#| slow` ones unless `--slow`) in a fresh Jupyter kernel (nbclient),
   so the pages carry real outputs (tables, plots as PNG). A skipped `#| slow` cell keeps the outputs saved
   in the notebook. A failing cell stops its notebook; the others still run, then the build fails naming every
   failing notebook and cell. Which notebooks ran, and how, is saved in `_proc/kdbook-exec.json`: the notebook
   tests (tests/test_notebooks_kernel.py) read it instead of running every notebook a second time.
2. rendered either by Quarto through nbdev (`nbdev.quarto_render.render_quarto`, as `nbdev-docs` does), or
   offline by pandoc: highlighted code, MathML math (no CDN), the sidebar and title of `_quarto.yml`,
   rewritten in-site links and a small search index (search.json + tools/docs_assets/search.js).
"""
from __future__ import annotations
import argparse, concurrent.futures as cf, hashlib, html, json, multiprocessing as mp, os, re, shutil
import subprocess, sys, tempfile, time, base64
from contextlib import contextmanager
try: import fcntl
except ImportError: fcntl = None # Windows: no lock (run one build at a time)
from html.parser import HTMLParser
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(__file__).resolve().parent
ASSETS = TOOLS/'docs_assets'

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

def sidebar_notebooks(cfg:dict) -> list:
    "Notebook paths (relative to nbs/) in `cfg`'s sidebar, in reading order"
    sb = (cfg.get('website') or {}).get('sidebar')
    if isinstance(sb, list): sb = sb[0]
    if not sb or 'contents' not in sb: raise DocsBuildError("_quarto.yml has no website.sidebar.contents: list the notebooks in reading order there.")
    return [h for _,h in _entries(sb['contents'])]

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
    return ExecKernel

def process_notebook(root, rel:str, slow:bool=False, timeout:int=900):
    "Notebook `nbs/rel` executed and processed by nbdev's doc processors, ready for Quarto or pandoc"
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

# ---------------------------------------------------------------- notebook -> pandoc markdown
_ansi = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')
_quarto_opt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def _cell_opts(src:str):
    "Quarto cell options (`#| echo: false`) of `src`, and the source without them"
    opts, keep = {}, []
    for l in src.splitlines():
        m = _quarto_opt.match(l)
        if m and not keep: opts[m.group(1)] = m.group(2).strip('"\'').lower()
        else: keep.append(l)
    return opts, '\n'.join(keep).strip('\n')

def _fence(text:str, cls:str='') -> str:
    n = max([3] + [len(m) + 1 for m in re.findall(r'`{3,}', text)])
    return f"{'`'*n}{cls}\n{text.rstrip()}\n{'`'*n}\n"

def _text(v): return ''.join(v) if isinstance(v, list) else (v or '')

def nb_markdown(nb, page_stem:str, out_dir:Path, img_rel:str) -> tuple:
    """Pandoc markdown of processed `nb`; images go to `out_dir/img_rel/` (relative to the page).
    Returns (front matter dict, markdown)."""
    fm, parts, n_img = {}, [], 0
    img_dir = Path(out_dir)/img_rel
    def save_img(data:str, ext:str, name:str) -> str:
        img_dir.mkdir(parents=True, exist_ok=True)
        raw = base64.b64decode(data) if ext != 'svg' else data.encode()
        (img_dir/f'{name}.{ext}').write_bytes(raw)
        return f'{img_rel}/{name}.{ext}'
    for ci,cell in enumerate(nb.cells):
        src = _text(cell.get('source'))
        if cell.cell_type == 'raw':
            s = src.strip()
            if s.startswith('---') and not fm:
                fm = yaml.safe_load(s.strip('-').strip()) or {}
            continue
        if cell.cell_type == 'markdown':
            for name,att in (cell.get('attachments') or {}).items():
                for mime,data in att.items():
                    if mime.startswith('image/'):
                        ext = mime.split('/')[1].split('+')[0]
                        src = src.replace(f'attachment:{name}', save_img(_text(data), ext, f'att-{ci}-{Path(name).stem}'))
            if '<!-- WARNING: THIS FILE WAS AUTOGENERATED' in src: continue
            parts.append(src.strip() + '\n')
            continue
        if cell.cell_type != 'code': continue
        opts, code = _cell_opts(src)
        if opts.get('include') == 'false': continue
        asis = opts.get('output') == 'asis'
        out = []
        if opts.get('echo') != 'false' and code.strip(): out.append(_fence(code, 'python'))
        if opts.get('output') != 'false':
            for oi,o in enumerate(cell.get('outputs', [])):
                t = o.get('output_type')
                if t == 'stream':
                    txt = _ansi.sub('', _text(o.get('text')))
                    if txt.strip(): out.append(_fence(txt, ' {.output .stream}') if not asis else txt)
                elif t == 'error':
                    out.append(_fence(_ansi.sub('', '\n'.join(o.get('traceback', []))), ' {.output .error}'))
                elif t in ('execute_result', 'display_data'):
                    d = o.get('data', {})
                    name = f'cell-{ci}-output-{oi}'
                    if 'image/png' in d: out.append(f'![]({save_img(_text(d["image/png"]), "png", name)}){{.cell-output-img}}\n')
                    elif 'image/jpeg' in d: out.append(f'![]({save_img(_text(d["image/jpeg"]), "jpeg", name)}){{.cell-output-img}}\n')
                    elif 'image/svg+xml' in d: out.append(f'![]({save_img(_text(d["image/svg+xml"]), "svg", name)}){{.cell-output-img}}\n')
                    # HTML before markdown, as Jupyter and nbconvert rank them: fastai's progress tables carry both,
                    # and their markdown is the HTML source in a code fence
                    elif 'text/html' in d: out.append(_fence(_text(d['text/html']), '{=html}'))
                    elif 'text/markdown' in d: out.append(_text(d['text/markdown']).strip() + '\n')
                    elif 'text/latex' in d: out.append(_text(d['text/latex']).strip() + '\n')
                    elif 'text/plain' in d: out.append(_fence(_text(d['text/plain']), ' {.output .result}') if not asis else _text(d['text/plain']))
        if out: parts.append('::: {.cell}\n' + '\n'.join(out) + '\n:::\n')
    return fm, '\n'.join(parts)

def page_href(rel:str, fm:dict=None) -> str:
    "Output page of notebook `rel` (relative to nbs/), as nbdev names it (`03_models.ipynb` -> `models.html`)"
    out = (fm or {}).get('output-file')
    if not out:
        from nbdev.doclinks import nbpath2html
        out = nbpath2html(Path(rel)).name
    return (Path(rel).parent/out).as_posix()

def nb_title(path:Path) -> str:
    "Title of the notebook at `path` (its first `# Title` markdown line), else its file name"
    try:
        for c in json.loads(Path(path).read_text()).get('cells', []):
            if c['cell_type'] != 'markdown': continue
            m = re.match(r'\s*#\s+(.+)', _text(c['source']))
            return m.group(1).strip() if m else Path(path).stem
    except (OSError, ValueError, KeyError): pass
    return Path(path).stem

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
    "Process one notebook (in a worker process): markdown + images written under `stage`"
    root, rel, slow, timeout, stage, threads = args
    if threads: os.environ.setdefault('OMP_NUM_THREADS', str(threads))
    t0, cwd = time.time(), os.getcwd()
    os.chdir(root)  # nbdev reads its settings from the project's pyproject.toml
    try: nb = process_notebook(root, rel, slow=slow, timeout=timeout)
    finally: os.chdir(cwd)
    hide_local_paths(nb, root)
    fm = getattr(nb, 'frontmatter_', {}) or {}
    href = page_href(rel, fm)
    from fastcore.nbio import write_nb
    proc = Path(stage)/'proc'/rel
    proc.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, proc)
    page_dir = Path(stage)/'site'/Path(href).parent
    fm2, md = nb_markdown(nb, Path(href).stem, page_dir, f'{Path(href).stem}_files/figure-html')
    fm = {**fm2, **fm}
    return dict(rel=rel, href=href, title=str(fm.get('title') or Path(rel).stem), description=str(fm.get('description') or ''),
                md=md, seconds=round(time.time()-t0, 1))

# ---------------------------------------------------------------- pandoc renderer
def find_pandoc() -> str|None:
    "Path of a pandoc binary: the one on PATH, else the one PyPI's `pypandoc-binary` (a dev extra) ships, else None"
    if p := shutil.which('pandoc'): return p
    try: import pypandoc
    except ImportError: return None
    try: p = pypandoc.get_pandoc_path()
    except OSError: return None
    return p if p and Path(p).exists() else None

def _relroot(href:str) -> str: return '../' * (len(Path(href).parts) - 1)

def _nav_html(cfg, pages:dict, cur:str) -> str:
    "Sidebar HTML for page `cur`, from `_quarto.yml`'s sidebar (same order and sections)"
    root = _relroot(cur)
    sb = cfg['website']['sidebar']
    if isinstance(sb, list): sb = sb[0]
    def items(contents):
        res = []
        for o in contents:
            if isinstance(o, dict) and 'contents' in o:
                sec = html.escape(str(o.get('section', '')))
                inner = items(o['contents'])
                if not inner: continue
                res.append(f'<li class="sidebar-section"><span class="sidebar-section-title">{sec}</span><ul>{"".join(inner)}</ul></li>')
            else:
                rel = o if isinstance(o, str) else o['href']
                p = pages.get(rel) or dict(href=page_href(rel), title=nb_title(Path(cfg.get('_root', ROOT))/'nbs'/rel))
                cls = ' class="active"' if p['href'] == cur else ''
                res.append(f'<li><a{cls} href="{root}{p["href"]}">{html.escape(p["title"])}</a></li>')
        return res
    return '<ul class="sidebar-nav">' + ''.join(items(sb['contents'])) + '</ul>'

def _fix_links(text:str, page:dict, pages:dict, site_url:str) -> str:
    "Point site-url links and `.ipynb` links at the pages of this build, relative to `page`"
    root, by_rel = _relroot(page['href']), {p['rel']: p for p in pages.values()}
    src_dir = Path(page['rel']).parent
    def sub(m):
        url = html.unescape(m.group(2))
        if site_url and url.startswith(site_url.rstrip('/') + '/'): url = root + url[len(site_url.rstrip('/'))+1:]
        elif not re.match(r'^[a-z][\w+.-]*:|^#|^/', url):
            path, _, frag = url.partition('#')
            if path.endswith('.ipynb'):
                rel = os.path.normpath((src_dir/path).as_posix()).replace(os.sep, '/')
                if rel in by_rel: url = root + by_rel[rel]['href'] + ('#'+frag if frag else '')
        return f'{m.group(1)}"{html.escape(url, quote=True)}"'
    return re.sub(r'(\shref=)"([^"]*)"', sub, text)

class _TextParser(HTMLParser):
    "Visible text and h1-h4 headings of an HTML page"
    def __init__(self):
        super().__init__(); self.text, self.heads, self._h, self._skip = [], [], None, 0
    def handle_starttag(self, tag, attrs):
        if tag in ('script', 'style', 'nav'): self._skip += 1
        if tag in ('h1','h2','h3','h4'): self._h = [tag, dict(attrs).get('id'), []]
    def handle_endtag(self, tag):
        if tag in ('script', 'style', 'nav'): self._skip = max(0, self._skip-1)
        if self._h and tag == self._h[0]:
            self.heads.append((self._h[0], self._h[1], ''.join(self._h[2]).strip())); self._h = None
    def handle_data(self, d):
        if self._skip: return
        self.text.append(d)
        if self._h: self._h[2].append(d)

def render_pandoc(cfg, results:list, site:Path, pandoc:str=None):
    "Render processed pages `results` into `site` with pandoc, the sidebar of `cfg`, and a search index"
    web = cfg.get('website') or {}
    title, site_url = str(web.get('title', 'kdbook')), str(web.get('site-url', ''))
    pages = {r['rel']: r for r in results}
    pandoc = pandoc or find_pandoc()
    (site/'site_libs').mkdir(parents=True, exist_ok=True)
    for f in ('kdbook.css', 'search.js'): shutil.copy2(ASSETS/f, site/'site_libs'/f)
    def page(r, tmp):
        "Render one page with pandoc; its search-index entry"
        out = site/r['href']
        out.parent.mkdir(parents=True, exist_ok=True)
        md, nav = Path(tmp)/'page.md', Path(tmp)/'nav.html'
        # the summary line is markdown (it may hold $math$): a YAML block lets pandoc parse it; the <meta>
        # description gets the same text without the math delimiters
        head = yaml.safe_dump({'summary': r['description']}, allow_unicode=True) if r['description'] else ''
        md.write_text((f'---\n{head}---\n\n' if head else '') + r['md']); nav.write_text(_nav_html(cfg, pages, r['href']))
        root = _relroot(r['href'])
        cmd = [pandoc, str(md), '-f', 'markdown+lists_without_preceding_blankline-smart', '-t', 'html5', '-s',
               '--template', str(ASSETS/'template.html'), '--mathml', '--toc', '--toc-depth=3',
               '--highlight-style=pygments', '--resource-path', str(out.parent),
               '-M', f'title={r["title"]}', '-M', f'pagetitle={r["title"]} – {title}',
               '-V', f'sitetitle={title}', '-V', f'root={root}',
               '--include-before-body', str(nav), '-o', str(out)]
        if r['description']: cmd += ['-M', f'description={r["description"].replace("$", "")}']
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode: raise DocsBuildError(f"pandoc failed on nbs/{r['rel']}:\n{p.stderr}")
        text = _fix_links(out.read_text(), r, pages, site_url)
        out.write_text(text)
        tp = _TextParser(); tp.feed(text)
        body = re.sub(r'\s+', ' ', ''.join(tp.text)).strip()
        return dict(href=r['href'], title=r['title'], text=body[:20000])
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [Path(tmp)/str(i) for i in range(len(results))]
        for d in dirs: d.mkdir()
        # one pandoc process per page, as many at once as there are CPUs: the rendering ends the build, alone
        with cf.ThreadPoolExecutor(os.cpu_count() or 1) as ex: index = list(ex.map(page, results, dirs))
    (site/'search.json').write_text(json.dumps(index))

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
def public_names(package:str='kdbook') -> dict:
    "{module: [names in its `__all__`]} for every module of `package` (from nbdev's `_modidx`)"
    import importlib
    modidx = importlib.import_module(f'{package}._modidx').d
    res = {}
    for mod in sorted(modidx['syms']):
        m = importlib.import_module(mod)
        res[mod] = list(getattr(m, '__all__', []))
    return res

def _norm(s:str) -> str: return re.sub(r'\s+', ' ', re.sub(r'[`*]', '', s)).strip()

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

# ---------------------------------------------------------------- freshness stamp
def source_digest(root:Path=ROOT, slow:bool=False) -> str:
    "Hash of everything the site is built from (notebooks, `_quarto.yml`, the package, this tool)"
    h = hashlib.sha256(f'slow={slow}'.encode())
    root = Path(root)
    files = [root/'_quarto.yml', root/'pyproject.toml', *sorted((root/'nbs').rglob('*.ipynb')), *sorted((root/'kdbook').glob('*.py'))]
    for f in files:
        if f.exists() and '.ipynb_checkpoints' not in f.parts: h.update(f.relative_to(root).as_posix().encode()); h.update(f.read_bytes())
    for f in [Path(__file__).resolve(), *sorted(ASSETS.glob('*'))]: h.update(f.name.encode()); h.update(f.read_bytes())
    return h.hexdigest()

def is_fresh(root:Path=ROOT, out:Path=None) -> bool:
    "Whether `out` (default _docs) was built from the current sources"
    out = Path(out or Path(root)/'_docs')
    st = out/'.build.json'
    if not st.exists(): return False
    try: d = json.loads(st.read_text())
    except ValueError: return False
    return d.get('digest') == source_digest(root, d.get('slow', False))

# ---------------------------------------------------------------- driver
def build(root:Path=ROOT, out:Path=None, renderer:str='auto', slow:bool=False, workers:int=None, timeout:int=None,
          only:list=None, log=print) -> dict:
    "Build the site of `root` into `out` (default `_docs`); returns a summary dict"
    t0 = time.time()
    root = Path(root).resolve()
    out = Path(out or root/'_docs').resolve()
    cfg = load_quarto(root)
    cfg['_root'] = str(root)
    rels = check_sidebar(root, cfg)
    if renderer == 'auto': renderer = 'quarto' if shutil.which('quarto') else 'pandoc'
    if renderer == 'pandoc' and not find_pandoc():
        raise DocsBuildError("pandoc is not installed: `pip install -e '.[dev]'` brings it (PyPI's pypandoc-binary), "
                             "or install Quarto for nbdev's renderer.")
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
        args = [(str(root), r, slow, timeout, str(stage), threads) for r in order]
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
        else: render_pandoc(cfg, results, site)
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
    ap.add_argument('--renderer', choices=['auto', 'quarto', 'pandoc'], default='auto',
                    help="auto: Quarto (nbdev's path) if `quarto` is on PATH, else pandoc (offline)")
    ap.add_argument('--slow', action='store_true', help='also execute `#| slow` cells (else they keep their saved outputs)')
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
    try: res = build(root, a.out and Path(a.out), a.renderer, a.slow, a.workers, a.timeout, a.only)
    except DocsBuildError as e:
        print(f"docs build failed: {e}", file=sys.stderr); return 1
    if a.strict and res['api_problems']: print("docs build failed: public names without API entries", file=sys.stderr); return 1
    return 0

if __name__ == '__main__':
    # run through the importable module `build_docs`, so worker processes can unpickle its functions and errors
    sys.path.insert(0, str(TOOLS))
    import build_docs
    sys.exit(build_docs.main())
