"""Sphinx configuration of kdbook's website (the book), used by `tools/build_docs.py`.

The build writes each executed notebook, processed by nbdev, as a MyST-NB source (`{stem}.ipynb` named after
nbdev's page, so `03_models.ipynb` stays `models.html`) and passes, from `_quarto.yml`, the site's title
(`project`, `html_title`) and repository (`html_theme_options.repository_url`) as overrides. Everything else
about the site is here.
"""
project = html_title = 'kdbook'
author = 'the kdbook developers'  # the footer's "By ..."
extensions = ['myst_nb',                 # notebooks as pages, with their saved outputs
              'sphinx-mathjax-offline']  # MathJax 3 served from the site itself: math works offline

# The notebooks were executed by the build (fresh Jupyter kernels) just before: render their outputs as they are.
nb_execution_mode = 'off'
# Markdown outputs (`show_doc`'s parameter tables) are parsed like the notebooks' own markdown cells.
nb_render_markdown_format = 'myst'
# Library warnings printed while a cell ran (a torch deprecation, tqdm without ipywidgets) are not the book's
# content; a notebook that teaches with a warning prints it to stdout.
nb_output_stderr = 'remove'
myst_enable_extensions = ['dollarmath', 'amsmath', 'attrs_inline', 'attrs_block']
myst_heading_anchors = 4          # `[text](other.ipynb#a-heading)` links resolve
myst_dmath_double_inline = True   # `$$ ... $$` inside a paragraph is display math, as in Jupyter

math_number_all = True            # every display equation carries its number...
math_numfig = numfig = True       # ... prefixed with its chapter's: (3.2)
math_eqref_format = '({number})'

html_theme = 'sphinx_book_theme'
html_theme_options = dict(
    repository_url='',                # from _quarto.yml's website.repo-url
    use_repository_button=True,       # the top bar's link to the repository
    use_download_button=True,         # "download this notebook" (.ipynb) on every page
    use_fullscreen_button=False,
    show_toc_level=2,                 # the right-hand table of contents: sections and subsections
    show_navbar_depth=1,
    home_page_in_toc=True,
)
html_static_path = ['_static']
html_css_files = ['kdbook.css']
html_js_files = ['section-search.js', 'sidebar-toggles.js']
html_show_sourcelink = False      # the download button links the notebook itself
html_copy_source = True           # _sources/: what the download button serves (the build puts the notebook there)
html_last_updated_fmt = None
exclude_patterns = ['_build', '**.ipynb_checkpoints']
# the sidebar: the book's title and its chapters (the search field is in the top bar)
html_sidebars = {'**': ['navbar-logo.html', 'sbt-sidebar-nav.html']}
# An API page's entries (`show_doc`'s level-3 headings) may follow its title directly, as on nbdev's own pages.
suppress_warnings = ['myst.header']
html_favicon = '_static/favicon.svg'
html_context = {'default_mode': 'light'}  # the theme's light/dark switch starts light (and logs no error on a first visit)
html_use_index = False                    # no general index page: the API entries are in the contents and the search


def number_equations(app, doctree):
    """Give each display equation of a page (MyST's `$$ ... $$`) a number and an anchor, as Sphinx's `math`
    directive does under `math_number_all`: MyST numbers only the equations that carry a label"""
    from docutils import nodes
    env, domain = app.env, app.env.domains.math_domain
    doc = env.current_document.docname
    for node in doctree.findall(nodes.math_block):
        if node.get('nowrap') or node.get('label'): continue
        node['label'] = f"{doc}:{env.new_serialno('sphinx.ext.math#equations')}"
        domain.note_equation(doc, node['label'], location=node)
        node['number'] = domain.get_equation_number_for(node['label'])
        node['ids'].append(nodes.make_id('equation-' + node['label']))

def setup(app):
    app.connect('doctree-read', number_equations)
