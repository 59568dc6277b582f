// kdbook: the menu buttons work on a phone.
// pydata-sphinx-theme (0.17 and later) hooks only the first `.primary-toggle` / `.secondary-toggle` of a page, a button
// of its own top bar that sphinx-book-theme hides; the book theme's buttons, the ones a reader sees, then do nothing
// (pydata/pydata-sphinx-theme#2451, executablebooks/sphinx-book-theme#988). Each other button passes its click on.
document.addEventListener('DOMContentLoaded', () => {
  ['.primary-toggle', '.secondary-toggle'].forEach((sel) => {
    const [hooked, ...others] = document.querySelectorAll(sel);
    others.forEach((b) => b.addEventListener('click', (e) => {
      e.preventDefault();
      e.stopPropagation();
      hooked.click();
    }));
  });
});
