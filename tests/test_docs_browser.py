"""The docs site, read as a reader would: every page in headless Chromium (Debian's `chromium`, driven by Playwright).

Builds `_docs/` with `tools/build_docs.py` unless it was built from the current sources, serves it on
127.0.0.1 (a free port, `http.server` in a thread) and fails on a console error, a page error, a failed
request, a broken in-site link or anchor, an image that does not load, or a page without its title.
Reads the site at a phone's width too, and searches it as a reader would. Saves screenshots of the index and of one
chapter, at desktop and phone width, under `_docs/_screenshots/`.
Install the browser with `apt-get install -y chromium` (Playwright is pointed at it; it downloads nothing).
"""
import functools, http.server, os, re, shutil, sys, tempfile, threading
from pathlib import Path
from urllib.parse import quote, urldefrag, urlparse, unquote
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import build_docs as bd

CHROMIUM = os.environ.get('KDBOOK_CHROMIUM') or shutil.which('chromium') or '/usr/bin/chromium'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']

# A user's machine may lack the browser: the test then skips, saying how to install it. CI installs it and sets
# KDBOOK_REQUIRE_BROWSER=1 (.ci/run), so there a missing browser fails instead of skipping silently.
_NO_BROWSER = (f"Chromium not found at {CHROMIUM}: install Debian's package with `apt-get install -y chromium` "
               f"(or set KDBOOK_CHROMIUM)")
_HAS_BROWSER = os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK) # a file there that cannot run is no browser
if not _HAS_BROWSER and os.environ.get('KDBOOK_REQUIRE_BROWSER'):
    raise RuntimeError(f"KDBOOK_REQUIRE_BROWSER is set but the browser test cannot run: {_NO_BROWSER}")
pytestmark = pytest.mark.skipif(not _HAS_BROWSER, reason=_NO_BROWSER)
sync_api = pytest.importorskip('playwright.sync_api', reason="Playwright's Python package is missing: `pip install -e '.[dev]'`")

@pytest.fixture(scope='module')
def site():
    try: return bd.ensure_site(ROOT)
    except bd.DocsBuildError as e: pytest.fail(f"docs build failed: {e}")

@pytest.fixture(scope='module')
def server(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{srv.server_port}/'
    srv.shutdown(); srv.server_close()

@pytest.fixture(scope='module')
def browser():
    with tempfile.TemporaryDirectory(prefix='kdbook-chromium-') as profile, sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                   viewport={'width': 1400, 'height': 1000})
        yield ctx
        ctx.close()

def _open_all(browser, urls):
    """Open each of `urls` in its own tab, all loading at once (each waits for its `load` event, its math and its
    fonts, and those waits overlap); returns one (page, problems seen while loading) per url"""
    opened = []
    for url in urls:
        probs, page = [], browser.new_page()
        page.on('console', lambda m, probs=probs:
                probs.append(f"console {m.type}: {m.text}") if m.type in ('error', 'assert') else None)
        page.on('pageerror', lambda e, probs=probs: probs.append(f"page error: {e}"))
        page.on('requestfailed', lambda r, probs=probs: probs.append(f"request failed: {r.url} ({r.failure})"))
        page.on('response', lambda r, probs=probs:
                probs.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.goto(url, wait_until='commit')
        opened.append((page, probs))
    for page, _ in opened:
        page.wait_for_load_state('load') # the page's images and scripts are in
        # then MathJax has typeset the math (and asked for its fonts), and the fonts are in
        page.evaluate("async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; await document.fonts.ready; }")
    return opened

def _open(browser, url):
    "Open `url` in a new tab; returns (page, problems seen while loading)"
    return _open_all(browser, [url])[0]

def _pages(site):
    "Every HTML page of the site, relative to it (not the generator's own files: `_static/`, `_sources/`, ...)"
    return sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html')
                  if not any(o.startswith('_') for o in p.relative_to(site).parts))

def test_site_lists_the_chapters_of_quarto_yml(site):
    "The site has one page per sidebar notebook, and its search page"
    assert _pages(site) == sorted(bd.sidebar_pages(ROOT) + ['search.html'])

def test_every_page(site, server, browser):
    title = str(bd.load_quarto(ROOT)['website']['title'])
    pages, ids, links, probs = _pages(site), {}, {}, {}
    for i in range(0, len(pages), 6): # six tabs load at a time; each is closed once read
        batch = pages[i:i+6]
        for rel, (page, p) in zip(batch, _open_all(browser, [server + rel for rel in batch])):
            t = page.title()
            if not t or title not in t: p.append(f"title {t!r} lacks the site title {title!r}")
            h1 = page.locator('h1:visible').first
            if not h1.count() or not h1.inner_text().strip(): p.append("no <h1> page title")
            bad = page.evaluate("Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
            p += [f"image does not load: {u}" for u in bad]
            ids[server + rel] = set(page.evaluate("Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
            links[rel] = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
            if p: probs[rel] = p
            page.close()
    # in-site links: the target page exists and so does the anchor
    for rel, hrefs in links.items():
        for h in set(hrefs):
            if not h.startswith(server): continue
            url, frag = urldefrag(h)
            frag = unquote(frag) # hrefs are percent-encoded, element ids are not (e.g. headings with α)
            if url.endswith('/'): url += 'index.html'
            if url not in ids:
                if not (site/urlparse(url).path.lstrip('/')).exists(): probs.setdefault(rel, []).append(f"broken link: {h}")
            elif frag and frag not in ids[url]: probs.setdefault(rel, []).append(f"broken anchor: {h}")
    assert not probs, 'pages with problems:\n' + '\n'.join(f"{k}:\n  " + '\n  '.join(v) for k,v in probs.items())

def test_sidebar_order_equals_quarto_yml(site, server, browser):
    "The index page's sidebar links the sidebar's notebooks in `_quarto.yml`'s order"
    page, probs = _open(browser, server + 'index.html')
    hrefs = page.evaluate("Array.from(document.querySelectorAll('nav.bd-docs-nav a[href]')).map(a => a.href)")
    page.close()
    got = [urldefrag(h)[0][len(server):] for h in hrefs if h.startswith(server) and h.endswith('.html')]
    got = [g for i,g in enumerate(got) if g not in got[:i]]
    want = [p for p in bd.sidebar_pages(ROOT) if p != 'index.html'] # the home page links itself as `#`
    assert [g for g in got if g in want] == want, f"sidebar order {got} != _quarto.yml {want}"
    assert not probs

def _search(browser, server, query):
    "Open the search page for `query`; returns (results as (class, href, text), problems) once each result is placed"
    page, probs = _open(browser, server + 'search.html?q=' + quote(query))
    page.wait_for_selector('#search-results p.search-summary', timeout=15000)
    # section-search.js points each full-text result at its section (it fetches the page): wait until it has
    page.wait_for_timeout(1500)
    res = page.eval_on_selector_all('#search-results li', 'els => els.map(e => [e.className, e.querySelector("a").getAttribute("href"), e.innerText])')
    page.close()
    return res, probs

def test_search_finds_an_api_entry(site, server, browser):
    "An API name finds its own entry, in its section of the API page"
    res, probs = _search(browser, server, 'InputNoise')
    assert any(h == 'data.html#inputnoise' for _,h,_ in res), res
    assert not probs

def test_search_finds_words_in_their_section(site, server, browser):
    "Words of the text find the chapter that holds them, linked at the section where they are, with that section named"
    res, probs = _search(browser, server, 'page faults')
    hit = [(h, t) for _,h,t in res if h.startswith('tutorials/structured.html#')]
    assert hit and ' › ' in hit[0][1], res
    sec = hit[0][0].split('#')[1]
    assert f'id="{sec}"' in (site/'tutorials/structured.html').read_text()
    assert not probs

def test_search_reaches_the_end_of_the_longest_page(site, server, browser):
    "A word found only near the end of the longest page finds that page: the whole text is indexed"
    texts = {}
    for rel in bd.sidebar_pages(ROOT):
        html = (site/rel).read_text(errors='replace')
        tp = bd._TextParser(); tp.feed(html[html.index('<article'):html.index('</article>')]) # the chapter, not the theme's frame
        texts[rel] = ' '.join(tp.text)
    longest = max(texts, key=lambda r: len(texts[r]))
    words = lambda t: set(re.findall(r'[a-z]{7,}', t.lower()))
    pages_with = lambda w: sum(w in words(t) for t in texts.values())
    word = min(reversed(re.findall(r'[a-z]{6,}', texts[longest][-2000:].lower())), key=pages_with) # its rarest word
    res, probs = _search(browser, server, word)
    assert any(h.split('#')[0] == longest for _,h,_ in res), (longest, word, res)
    assert not probs

def test_search_ranks_a_word_inside_another_last(site, server, browser):
    "A page that holds the word only inside a longer one (lamp in clamp) comes last, dimmed"
    res, probs = _search(browser, server, 'lamp')
    weak = [h for c,h,_ in res if 'kdbook-weak' in c]
    assert all('kdbook-weak' in c for c,_,_ in res[len(res)-len(weak):]), res
    for h in weak:
        tp = bd._TextParser(); tp.feed((site/h.split('#')[0]).read_text(errors='replace'))
        assert not re.search(r'\blamp', ' '.join(tp.text), re.I), h
    assert not probs

def test_phone_width(site, server, browser):
    "At 390 px: the chapter's title is on the first screen, nothing is wider than the screen, the menu opens"
    ch = _chapter(site)
    page, probs = _open(browser, server + ch)
    page.set_viewport_size({'width': 390, 'height': 844})
    page.wait_for_timeout(300)
    top = page.locator('h1:visible').first.bounding_box()['y']
    assert top < 844/2, f"the title starts {top} px down"
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 391, f"the page is {wide} px wide: something does not fit or scroll in its box"
    nav = page.locator('nav.bd-docs-nav a[href]').first
    assert not nav.is_visible()
    page.locator('button.primary-toggle:visible').first.click()
    # the theme opens the book's contents in a dialog over the page
    page.locator('dialog[open] a[href]:visible').first.wait_for(timeout=3000)
    assert page.locator('dialog[open] a[href]:visible').count() >= len(bd.sidebar_pages(ROOT)) - 1
    out = site/'_screenshots'; out.mkdir(exist_ok=True)
    page.keyboard.press('Escape')
    page.screenshot(path=str(out/'chapter_phone.png'))
    page.close()
    assert not probs

def _chapter(site):
    "First page in reading order (tutorials first) with code, an image and math, else one with code and an image"
    pages = [p for p in bd.sidebar_pages(ROOT) if p != 'index.html']
    pages = [p for p in pages if p.startswith('tutorials/')] + [p for p in pages if not p.startswith('tutorials/')]
    def has(p, *tags):
        t = (site/p).read_text(errors='replace')
        return all(g in t for g in tags)
    return next((p for p in pages if has(p, '<pre', '<img', 'class="math')), None) or next((p for p in pages if has(p, '<pre', '<img')), pages[0])

def test_screenshots(site, server, browser):
    "Screenshots of the index and of a chapter (its top, and around its first plot) under _docs/_screenshots/"
    out = site/'_screenshots'; out.mkdir(exist_ok=True)
    page, probs = _open(browser, server + 'index.html')
    page.screenshot(path=str(out/'index.png'))
    page.close()
    ch = _chapter(site)
    page, p2 = _open(browser, server + ch)
    page.screenshot(path=str(out/'chapter.png'))
    img = page.locator('main img').first
    if img.count():
        img.scroll_into_view_if_needed()
        page.evaluate("window.scrollBy(0, -250)")
        page.screenshot(path=str(out/'chapter_plot.png'))
    page.close()
    for f in ('index.png', 'chapter.png'): assert (out/f).stat().st_size > 10_000, f
    assert not probs + p2
