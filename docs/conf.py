"""Sphinx configuration of the sersic-fitnet documentation.

Build (what CI runs, after ``pip install ".[docs]"``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# autodoc imports fitnet and simulate from the checkout, installed or not.
sys.path.insert(0, str(ROOT))

project = "sersic-fitnet"
author = "sersic-fitnet developers"
copyright = "sersic-fitnet developers"
# The version, from pyproject.toml (one source; the docs build needs no install).
_match = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
release = _match.group(1) if _match else "unknown"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: `[text](#anchor)` links to headings down to level 3; `$...$` is left alone.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc: members in source order, with their signatures' type hints in the description.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = "sersic-fitnet"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Sersic profile fitting in one forward pass",
    "fixed_sidebar": True,
}
