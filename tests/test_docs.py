"""The derivation guide's links land on the code they quote, and the README links to the guide."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "derivations.md")
LINK = re.compile(r"\[`([^`]+)`\]\(\.\./([^)#]+)(?:#L(\d+))?\)")


def _links():
    with open(GUIDE, encoding="utf-8") as guide:
        return LINK.findall(guide.read())


def test_the_guide_links_every_hand_derived_file_and_many_lines():
    links = _links()
    files = {path for _, path, _ in links}
    assert {"manualbp/autograd/linear.py", "manualbp/autograd/activations.py", "manualbp/autograd/losses.py"} <= files
    assert sum(1 for _, _, line in links if line) >= 25


@pytest.mark.parametrize("quoted, path, line", [link for link in _links() if link[2]], ids=lambda v: str(v)[:40])
def test_each_line_link_lands_on_the_code_it_quotes(quoted, path, line):
    with open(os.path.join(ROOT, path), encoding="utf-8") as source:
        text = source.read().splitlines()[int(line) - 1]
    # "…" stands for an elided part of the line: every quoted fragment must appear on it, in order
    position = 0
    for fragment in (part.strip() for part in quoted.split("…")):
        found = text.find(fragment, position)
        assert found >= 0, f"{path}#L{line} is {text.strip()!r}, which does not hold {fragment!r}"
        position = found + len(fragment)


def test_the_readme_links_the_derivation_guide():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as readme:
        assert "(docs/derivations.md)" in readme.read()
