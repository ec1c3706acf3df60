"""Sphinx configuration of the course book (built by ``.ci/book``; see ``book/build.py``).

The notebooks are rendered with their committed outputs, never executed here. Everything the
pages load (widget manager, require.js, MathJax) is served from the book itself, so the book
works offline and from a plain file server.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

project = "gqlearn: group-wise quantization of LLM weights"
author = "gqlearn developers"
copyright = "gqlearn developers; text and figures CC BY 4.0, code MIT"

extensions = ["myst_nb"]

# Sources: index.md and the notebooks, copied beside this file by build.py.
exclude_patterns = ["_static", "**/.ipynb_checkpoints", "README.md"]
nb_execution_mode = "off"  # committed outputs, as nbval checks them
nb_merge_streams = True

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
# Chapters link to each other's headings the Jupyter way (#7.-Model-size-...).
myst_heading_anchors = 6
myst_heading_slug_func = "jupyter_slug.jupyter_slug"

# Served from _static/ (fetched from npm by build.py) instead of a CDN.
nb_ipywidgets_js = {
    "vendor/require.min.js": {},
    "widgets_setup.js": {},
    "vendor/html-manager/embed-amd.js": {},
}
mathjax_path = "vendor/mathjax/tex-chtml.js"

html_theme = "sphinx_book_theme"
html_title = "gqlearn course"
html_static_path = ["_static"]
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "navigation_with_keys": False,
    "use_download_button": False,
}
html_context = {"default_mode": "auto"}  # else the theme logs "invalid theme mode" on first visit
html_last_updated_fmt = None
html_show_sourcelink = False
html_copy_source = False
