// kdbook: Sphinx's search page, section by section.
// Sphinx finds the pages whose text holds the words of the query, and links section titles and API names to their
// section, but a word in the text only to the top of its page. Here each such result is pointed at the first
// section of its page that holds all the words (its title shown after the page's), where Sphinx's own highlighting
// then marks them. A page that holds a word only inside a longer one (Sphinx's partial match: "lamp" in "clamp")
// is moved to the end of the list and dimmed.
document.addEventListener('DOMContentLoaded', () => {
  const box = document.getElementById('search-results');
  const query = new URLSearchParams(window.location.search).get('q') || '';
  const words = query.toLowerCase().split(/\s+/).filter((w) => w.length > 1);
  if (!box || !words.length) return;
  // a word matches at the start of a word of the text, up to a crude stem ("distilling" finds "distillation")
  const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const patterns = words.map((w) => new RegExp('(^|[^\\p{L}\\p{N}_])' + esc(w.slice(0, Math.max(4, w.length - 3))), 'iu'));
  const holdsAll = (text) => patterns.every((p) => p.test(text));
  const pages = new Map();
  const fetchPage = (url) => {
    if (!pages.has(url)) pages.set(url, fetch(url).then((r) => r.text()).then((t) => new DOMParser().parseFromString(t, 'text/html')));
    return pages.get(url);
  };
  const ownText = (sec) => {
    const c = sec.cloneNode(true);
    c.querySelectorAll('section, a.headerlink').forEach((s) => s.remove());
    return c.textContent;
  };
  const locate = async (item, link) => {
    const url = new URL(link.href);
    if (url.hash) return; // Sphinx already links a section (a title or an API name matched)
    const doc = await fetchPage(url.origin + url.pathname);
    const main = doc.querySelector('[role="main"]') || doc.body;
    if (!holdsAll(main.textContent)) { item.classList.add('kdbook-weak'); item.parentElement.append(item); return; }
    const sec = [...main.querySelectorAll('section[id]')].find((s) => holdsAll(ownText(s)));
    if (!sec || !sec.parentElement.closest('section')) return; // the page's opening holds the words: its top is right
    link.setAttribute('href', link.getAttribute('href').split('#')[0] + '#' + sec.id);
    item.kdbookText = ownText(sec).replace(/\s+/g, ' ');
    showContext(item);
    const h = sec.querySelector('h1, h2, h3, h4, h5, h6');
    if (!h) return;
    const t = h.cloneNode(true);
    t.querySelectorAll('a.headerlink').forEach((a) => a.remove());
    const span = document.createElement('span');
    span.className = 'kdbook-section';
    span.textContent = ' › ' + t.textContent.trim();
    link.after(span);
  };
  // the result's summary: the words in their section (Sphinx's summary, filled in when its fetch ends, is replaced)
  const showContext = (item) => {
    const p = item.querySelector('p.context');
    if (!p || !item.kdbookText || p.dataset.kdbook) return;
    const text = item.kdbookText, m = patterns[0].exec(text);
    const start = Math.max(0, (m ? m.index : 0) - 120);
    p.textContent = (start ? '...' : '') + text.substr(start, 240).trim() + (start + 240 < text.length ? '...' : '');
    p.dataset.kdbook = '1';
    if (typeof _highlightText === 'function') words.forEach((w) => _highlightText(p, w, 'highlighted'));
  };
  const seen = new WeakSet();
  new MutationObserver(() => {
    box.querySelectorAll('li').forEach(showContext);
    box.querySelectorAll('li > a').forEach((a) => {
      if (seen.has(a)) return;
      seen.add(a);
      locate(a.parentElement, a).catch(() => {}); // a page that cannot be read keeps Sphinx's link
    });
  }).observe(box, { childList: true, subtree: true });
});
