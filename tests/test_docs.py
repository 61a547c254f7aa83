"""The documentation says what the code does: examples that agree, nothing shipped described
as planned."""

from __future__ import annotations

import re
from pathlib import Path

from fitnet import build

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_build_help_and_the_readme_give_the_same_small_budget():
    example = re.search(r"^Example: (.*)$", build.__doc__, re.M).group(1).strip()
    assert example in (ROOT / "README.md").read_text()


def test_no_page_calls_a_feature_not_yet_implemented():
    said = [
        p.relative_to(ROOT) for p in PAGES if re.search(r"not yet implemented", p.read_text(), re.I)
    ]
    assert not said, said


def test_the_readme_names_no_placeholder_path():
    # a command a user copies must run as written: no <date>/<time> folders to fill in
    commands = re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), re.M | re.S)
    assert not [c for c in commands if "<" in c and ">" in c]
