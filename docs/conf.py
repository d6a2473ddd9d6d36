"""Sphinx configuration for the hello-asgi docs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hello_asgi import __version__  # noqa: E402

project = "hello-asgi"
author = "the hello-asgi developers"
version = release = __version__
html_theme = "alabaster"
exclude_patterns = ["_build"]
