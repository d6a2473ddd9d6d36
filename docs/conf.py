"""Sphinx configuration for the hello-asgi docs (build: sphinx-build -W --keep-going -b html docs out)."""

import sys
from pathlib import Path

# The checkout first, so the docs describe the code next to them. Importing hello_asgi has
# no side effects: no reactor is installed and nothing listens.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hello_asgi import __version__  # noqa: E402

project = "hello-asgi"
author = "the hello-asgi developers"
version = release = __version__

extensions = ["sphinx.ext.autodoc"]  # api.rst documents the public names from their docstrings
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures read better without them; the docstrings say what goes in

html_theme = "alabaster"
exclude_patterns = ["_build"]
