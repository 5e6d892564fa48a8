"""The derivation guide's links land on the code they quote, and the README links to the guide.

A link to code names the file and, in its title, the scope that holds the quoted line, so that it survives edits
that move lines: [`grad_bias = g.sum(0)`](../manualbp/autograd/linear.py "Linear.backward"). The scope is a method,
``Class.method``, or a module-level ``function``, found with ``ast``; "…" in a quote stands for an elided part of
the line. A link with no title points at a whole file.
"""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUIDE = os.path.join(ROOT, "docs", "derivations.md")
REFERENCE_FILES = {
    "manualbp/autograd/linear.py",
    "manualbp/autograd/activation.py",
    "manualbp/autograd/mse.py",
    "manualbp/autograd/cross_entropy.py",
    "manualbp/autograd/conv.py",
    "manualbp/autograd/pooling.py",
    "manualbp/autograd/normalization.py",
    "manualbp/autograd/batch_norm.py",
    "manualbp/autograd/dropout.py",
    "manualbp/autograd/softmax.py",
    "manualbp/autograd/layer_norm.py",
    "manualbp/autograd/group_norm.py",
    "manualbp/autograd/sparse.py",
    "manualbp/autograd/attention.py",
}

# [text](../path) or [text](../path "Scope"); the text of a titled link is one code span (which may hold "]"), the
# quote
LINK = re.compile(r'\[(`[^`]+`|[^\]`]+)\]\(\.\./([^)\s"]+)(?:\s+"([^"]+)")?\)')
ELISION = "…"


def _links():
    """Every relative link of the guide, as ``(text, path, scope)``; scope is None for a link to a whole file."""
    with open(GUIDE, encoding="utf-8") as guide:
        return [(text, path, scope or None) for text, path, scope in LINK.findall(guide.read())]


def _anchored_links():
    return [link for link in _links() if link[2] is not None]


def _scopes(path):
    """``{"Class.method" or "function": the line numbers of its code}``, docstrings left out (they are not code)."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as source:
        tree = ast.parse(source.read())
    functions = [(node.name, node) for node in tree.body if isinstance(node, ast.FunctionDef)]
    for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
        functions += [(f"{cls.name}.{node.name}", node) for node in cls.body if isinstance(node, ast.FunctionDef)]
    scopes = {}
    for name, node in functions:
        lines = set(range(node.lineno, node.end_lineno + 1))
        docstring = node.body[0]
        if isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant):
            lines -= set(range(docstring.lineno, docstring.end_lineno + 1))
        scopes[name] = sorted(lines)
    return scopes


def _holds(line, quote):
    """Whether every "…"-separated fragment of ``quote`` occurs on ``line``, in order."""
    position = 0
    for fragment in (part.strip() for part in quote.split(ELISION)):
        found = line.find(fragment, position)
        if found < 0:
            return False
        position = found + len(fragment)
    return True


def _link_id(link):
    text, path, scope = link
    return f"{os.path.basename(path)}:{scope}:{text.strip('`').replace(ELISION, '...')}"


def test_the_guide_links_every_reference_file_and_anchors_many_quotes():
    links = _links()
    assert {path for _, path, _ in links} >= REFERENCE_FILES
    assert len(_anchored_links()) >= 25, f"only {len(_anchored_links())} links quote code in a named scope"


def test_every_relative_link_of_the_guide_is_read():
    with open(GUIDE, encoding="utf-8") as guide:
        text = guide.read()
    unread = [line for line in text.splitlines() if line.count("](../") != len(LINK.findall(line))]
    assert not unread, f"links this test cannot read (text one code span or plain, title in double quotes): {unread}"


def test_the_guide_links_no_line_numbers():
    with open(GUIDE, encoding="utf-8") as guide:
        numbered = re.findall(r"\]\([^)]*#L\d+[^)]*\)", guide.read())
    assert not numbered, f"line-number anchors break on every edit; name the scope instead: {numbered}"


@pytest.mark.parametrize("path", sorted({path for _, path, _ in _links()}))
def test_each_linked_file_exists(path):
    assert os.path.isfile(os.path.join(ROOT, path)), f"docs/derivations.md links ../{path}, which does not exist"


@pytest.mark.parametrize("link", _anchored_links(), ids=_link_id)
def test_each_anchored_quote_is_on_exactly_one_line_of_its_scope(link):
    text, path, scope = link
    assert re.fullmatch(r"`[^`]+`", text), f"the text of a link with a scope is one code span, not {text!r}"
    quote = text[1:-1]
    scopes = _scopes(path)
    assert scope in scopes, f"{path} has no {scope!r}; its scopes are {sorted(scopes)}"
    with open(os.path.join(ROOT, path), encoding="utf-8") as source:
        lines = source.read().splitlines()
    matches = [number for number in scopes[scope] if _holds(lines[number - 1], quote)]
    code = "\n".join(f"  {number}: {lines[number - 1]}" for number in scopes[scope])
    assert matches, f"no line of {path} {scope} holds {quote!r}:\n{code}"
    assert len(matches) == 1, f"{quote!r} is on lines {matches} of {path} {scope}; quote more to tell them apart"


def test_the_readme_links_the_derivation_guide():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as readme:
        assert "(docs/derivations.md)" in readme.read()
