"""Meta-tests: every hook is documented in its spec, exercised by a test, and described in docs/plugins.md."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from crawlkeeper import hookspecs

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
GUIDE = ROOT / "docs" / "plugins.md"
HOOKS = hookspecs.hook_names()


def signature_line(name: str) -> str:
    """``crawlkeeper_x(arg: Type) -> Ret`` exactly as declared in hookspecs.py (whitespace normalised)."""
    source = inspect.getsource(getattr(hookspecs, name))
    match = re.search(r"^def\s+(" + name + r"\(.*?\)\s*->\s*.*?):\s*$", source, re.M | re.S)
    assert match, f"cannot find the def line of {name}"
    return " ".join(match.group(1).split())


def test_hook_names_are_the_declared_hooks() -> None:
    assert len(HOOKS) == len(set(HOOKS)) >= 10
    for name in HOOKS:
        assert name.startswith("crawlkeeper_")
        assert hasattr(getattr(hookspecs, name), "crawlkeeper_spec"), f"{name} is not marked with @hookspec"
    assert set(HOOKS) >= hookspecs.ASYNC_HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_every_hookspec_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc) > 40, f"{name} needs a docstring saying when it is called and what it gets"
    params = inspect.signature(getattr(hookspecs, name)).parameters
    for param in params:
        assert param in doc, f"the docstring of {name} does not mention its argument {param!r}"


def test_every_hook_is_exercised_by_a_test() -> None:
    me = Path(__file__).resolve()
    texts = [p.read_text(encoding="utf-8") for p in TESTS.rglob("*.py") if p.resolve() != me]
    missing = [name for name in HOOKS if not any(re.search(rf"\b{name}\b", text) for text in texts)]
    assert not missing, f"hooks no test under tests/ mentions: {missing}"


def test_every_hook_is_documented_in_the_plugin_guide() -> None:
    assert GUIDE.is_file()
    text = " ".join(GUIDE.read_text(encoding="utf-8").split())
    missing_names = [name for name in HOOKS if name not in text]
    assert not missing_names, f"docs/plugins.md does not mention: {missing_names}"
    missing_signatures = [signature_line(name) for name in HOOKS if signature_line(name) not in text]
    assert not missing_signatures, f"docs/plugins.md lacks these signature lines: {missing_signatures}"


def test_signature_lines_are_found() -> None:
    assert signature_line("crawlkeeper_session_closing") == (
        "crawlkeeper_session_closing(session: Session, reason: str) -> None"
    )
    assert signature_line("crawlkeeper_auth_methods") == "crawlkeeper_auth_methods() -> list[AuthMethod]"


def test_the_guides_hook_reference_is_the_generated_one() -> None:
    """The guide's hook reference is generated from the hookspecs; regenerate with `python -m crawlkeeper.hookdoc`."""
    from crawlkeeper.hookdoc import BEGIN, END, reference_markdown

    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index(BEGIN): text.index(END) + len(END)]
    assert section == reference_markdown()
