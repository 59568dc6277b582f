// Client-side search over search.json (written by tools/build_docs.py); no network, no dependencies.
(function () {
  const root = (document.querySelector('meta[name="kdbook-root"]') || {}).content || '';
  const input = document.getElementById('search-input'), list = document.getElementById('search-results');
  if (!input || !list) return;
  let index = null;
  function load() {
    if (index) return Promise.resolve(index);
    return fetch(root + 'search.json').then(r => r.json()).then(d => (index = d)).catch(() => (index = []));
  }
  function snippet(text, word) {
    const i = text.toLowerCase().indexOf(word);
    return i < 0 ? '' : (i > 40 ? '…' : '') + text.slice(Math.max(0, i - 40), i + 80) + '…';
  }
  function show(q) {
    const words = q.toLowerCase().split(/\s+/).filter(Boolean);
    list.innerHTML = '';
    if (!words.length) { list.hidden = true; return; }
    const hits = index.filter(p => words.every(w => (p.title + ' ' + p.text).toLowerCase().includes(w)));
    for (const p of hits.slice(0, 12)) {
      const li = document.createElement('li'), a = document.createElement('a'), s = document.createElement('span');
      a.href = root + p.href; a.textContent = p.title; s.className = 'snippet'; s.textContent = snippet(p.text, words[0]);
      li.append(a, s); list.append(li);
    }
    if (!hits.length) { const li = document.createElement('li'); li.textContent = 'No match'; list.append(li); }
    list.hidden = false;
  }
  input.addEventListener('focus', load);
  input.addEventListener('input', () => load().then(() => show(input.value)));
})();
