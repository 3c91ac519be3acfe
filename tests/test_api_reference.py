"""The reference answers for every public name: docs/API.md has an entry for each name in
``mappedpages.__all__``, for each public member of those classes and for each command of the
command line; every public class, function and member has a docstring of its own; the
signatures ``help()`` shows are true; the version is written in one place; and every document
section the source points to exists."""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import pydoc
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import mappedpages as mp
from mappedpages import cli

ROOT = Path(__file__).resolve().parent.parent
API_MD = ROOT / "docs" / "API.md"


# -- what is public ----------------------------------------------------------------------


def _ours(obj: object) -> bool:
    return str(getattr(obj, "__module__", "")).split(".")[0] == "mappedpages"


def public_classes() -> Iterator[tuple[str, type]]:
    """The classes of ``__all__`` that the package defines (not ``MappedPage``, a memoryview)."""
    for name in mp.__all__:
        obj = getattr(mp, name)
        if isinstance(obj, type) and _ours(obj):
            yield name, obj


def public_members() -> Iterator[tuple[str, type, str, object]]:
    """(qualified name, the class that defines it, its name, the attribute as defined) for
    every public member of a public class, inherited ones included, that the package defines
    (a tuple's ``count``, an exception's ``args`` are not the package's)."""
    for name, cls in public_classes():
        for attr in dir(cls):
            if attr.startswith("_"):
                continue
            owner = next(k for k in cls.__mro__ if attr in vars(k))
            if _ours(owner):
                yield f"{name}.{attr}", owner, attr, vars(owner)[attr]


def docstring(raw: object) -> str:
    """The member's own docstring, or "" when it has none or only one it did not write: the
    docstring of its type (a plain value, a slot without one), of the callable behind a
    property (``property(itemgetter(0))``), or a named tuple's generated one."""
    if isinstance(raw, (classmethod, staticmethod)):
        raw = raw.__func__
    doc = getattr(raw, "__doc__", None)
    slots = getattr(getattr(raw, "__objclass__", None), "__slots__", None)
    if isinstance(slots, dict) and inspect.ismemberdescriptor(raw):
        doc = slots.get(raw.__name__)  # __slots__ = {"name": "its docstring"}, as pydoc reads
    doc = inspect.cleandoc(doc if isinstance(doc, str) else "")
    borrowed = {type(raw).__doc__}
    if isinstance(raw, property) and not inspect.isfunction(raw.fget):
        borrowed.add(type(raw.fget).__doc__)
    if doc in borrowed or doc.startswith("Alias for field number"):
        return ""
    return doc


def test_the_walk_sees_the_api() -> None:
    """The walk finds members of every kind (else the tests below would check nothing)."""
    names = {qualified for qualified, *_ in public_members()}
    for expected in (
        "Pager.alloc",  # a method
        "Pager.create",  # a classmethod
        "Pager.page_size",  # an inherited property
        "ReadOnlyPager.get_page",  # inherited from the shared read side
        "Pager.alloc_async",  # from the asyncio mixin
        "PageId.index",  # a property over itemgetter
        "SubPageId.parent",
        "ProtectedPages.pager",  # a slot
        "ReaderInfo.pid",  # a named tuple's field
        "BulkPageAllocator.alloc",  # inherited from another protocol
    ):
        assert expected in names
    assert "PageId.count" not in names  # tuple's own
    assert "MappedPageError.args" not in names
    assert len(names) > 100


# -- docstrings ----------------------------------------------------------------------------


def test_every_public_class_and_function_has_a_docstring() -> None:
    missing = []
    for name in mp.__all__:
        obj = getattr(mp, name)
        if isinstance(obj, type) and not _ours(obj):
            continue  # MappedPage is memoryview
        if (isinstance(obj, type) or callable(obj)) and not docstring(obj):
            missing.append(name)
    assert missing == []


def test_every_public_member_has_a_docstring() -> None:
    missing = {q for q, _, _, raw in public_members() if not docstring(raw)}
    assert sorted(missing) == []


def test_docstring_check_is_not_fooled() -> None:
    class Sample:
        __slots__ = {"bare": "", "slot": "Slot."}
        value = 3
        from operator import itemgetter

        looked_up = property(itemgetter(0))
        told = property(itemgetter(0), doc="Told.")

        def plain(self) -> None:
            pass

        def said(self) -> None:
            """Said."""

    raw = vars(Sample)
    assert [docstring(raw[n]) for n in ("bare", "value", "looked_up", "plain")] == [""] * 4
    assert docstring(raw["told"]) == "Told." and docstring(raw["said"]) == "Said."
    assert docstring(raw["slot"]) == "Slot."
    assert docstring(vars(mp.ReaderInfo)["pid"]) != ""


# -- docs/API.md ---------------------------------------------------------------------------


def _entries() -> str:
    """The lines of docs/API.md that start an entry: headings, list items and table rows."""
    text = API_MD.read_text(encoding="utf-8")
    return "\n".join(re.findall(r"^(?:#{1,6} |- |\| ).*$", text, re.M))


def _names(entries: str, qualified: str) -> bool:
    return re.search(r"`(?:mp\.)?" + re.escape(qualified) + r"\b", entries) is not None


def test_api_md_has_an_entry_for_every_public_name() -> None:
    entries = _entries()
    assert [name for name in mp.__all__ if not _names(entries, name)] == []


def test_api_md_has_an_entry_for_every_public_member() -> None:
    """An inherited member is documented once for all the public classes that share it (the
    read side of ``Pager``, ``ReadOnlyPager`` and ``Snapshot``): an entry under any of them."""
    entries = _entries()
    sharing: dict[tuple[type, str], list[str]] = {}
    for qualified, owner, attr, _ in public_members():
        sharing.setdefault((owner, attr), []).append(qualified)
    missing = [
        " / ".join(names)
        for names in sharing.values()
        if not any(_names(entries, qualified) for qualified in names)
    ]
    assert missing == []


def test_api_md_names_only_what_exists() -> None:
    entries = _entries()
    public = {name: getattr(mp, name) for name in mp.__all__}
    stale = []
    for cls_name, attr in re.findall(r"`(?:mp\.)?([A-Z]\w*)\.(\w+)", entries):
        if cls_name in public and not attr.startswith("_"):
            qualified = f"{cls_name}.{attr}"
            if not hasattr(public[cls_name], attr):
                stale.append(qualified)
    for name in re.findall(r"`mp\.(\w+)", entries):
        if name not in public and name != "__version__":
            stale.append(f"mp.{name}")
    assert stale == []


def _commands() -> set[str]:
    parser = cli._parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_api_md_has_an_entry_for_every_command() -> None:
    entries = _entries()
    documented = set(re.findall(r"`mappedpages (\w+)", entries))
    commands = _commands()
    assert {"info", "check", "bench"} <= commands
    assert sorted(commands - documented) == []
    assert sorted(documented - commands) == []


def test_source_points_only_to_sections_that_exist() -> None:
    """``docs/X.md`` named in the package's source exists, and so does the section named
    with it (``(docs/API.md, "Pager")``)."""
    broken = []
    for source in sorted((ROOT / "src" / "mappedpages").rglob("*.py")):
        text = source.read_text(encoding="utf-8")
        for match in re.finditer(r'\b((?:docs/)?[A-Z]+\.md)\b(?:,? \(?"([^"]+)")?', text):
            where = f"{source.relative_to(ROOT)}: {match.group(0)}"
            document = ROOT / match.group(1)
            if not document.is_file():
                broken.append(where)
                continue
            if match.group(2):
                section = " ".join(match.group(2).split())
                headings = re.findall(r"^#+ (.*)$", document.read_text(encoding="utf-8"), re.M)
                if not any(section in heading for heading in headings):
                    broken.append(where)
    assert broken == []


# -- signatures ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [mp.Pager, mp.ReadOnlyPager, mp.Snapshot])
def test_readers_show_how_they_are_made(cls: type) -> None:
    """Calling the class refuses (the file must be checked and mapped first): to
    ``inspect``, ``help()`` and mypy it takes no arguments, and its docstring names the
    calls that make one, with their arguments."""
    assert str(inspect.signature(cls)) == "()"
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert "*args" not in text.split("Methods defined here")[0]
    made_by = {
        mp.Pager: ["Pager.create(path, page_size=4096,", "Pager.open(path, page_size=None,"],
        mp.ReadOnlyPager: ["ReadOnlyPager.open(path, page_size=None)"],
        mp.Snapshot: ["pager.snapshot()"],
    }[cls]
    doc = " ".join((cls.__doc__ or "").split())
    assert all(call in doc for call in made_by), doc
    for args in ((), ("data.mp",), ("data.mp", 4096)):
        with pytest.raises(TypeError, match=re.escape(made_by[0].split("(")[0])):
            cls(*args)


def test_constructors_have_real_signatures() -> None:
    assert list(inspect.signature(mp.Pager.create).parameters) == [
        "path",
        "page_size",
        "sync",
        "preallocate",
        "mode",
    ]
    assert list(inspect.signature(mp.Pager.open).parameters) == [
        "path",
        "page_size",
        "sync",
        "preallocate",
        "create",
        "mode",
    ]
    assert list(inspect.signature(mp.ReadOnlyPager.open).parameters) == ["path", "page_size"]
    assert list(inspect.signature(mp.PageId).parameters) == ["index", "page_size"]
    assert list(inspect.signature(mp.SubPageId).parameters) == ["parent", "slot", "sub_size"]


def test_no_public_callable_hides_its_arguments() -> None:
    """No class or method a user calls shows ``(*args, **kwargs)`` in ``help()``
    (protocols, which are not called, and exceptions are left out)."""
    hidden = []
    for name, cls in public_classes():
        if issubclass(cls, BaseException) or getattr(cls, "_is_protocol", False):
            continue
        callables = [(name, cls)] + [
            (q, getattr(cls, attr))
            for q, _, attr, raw in public_members()
            if q.startswith(name + ".") and callable(raw) and not isinstance(raw, type)
        ]
        for qualified, obj in callables:
            kinds = {p.kind for p in inspect.signature(obj).parameters.values()}
            if {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} <= kinds:
                hidden.append(qualified)
    assert hidden == []


# -- the version ---------------------------------------------------------------------------


def test_version_is_written_once() -> None:
    """pyproject.toml takes the version from ``mappedpages.__version__``, and the installed
    metadata and ``mappedpages --version`` say the same."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r"^version\s*=", project, re.M) is None
    assert re.search(r'^dynamic\s*=\s*\[[^]]*"version"', project, re.M)
    assert 'version = { attr = "mappedpages.__version__" }' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+(\w+\d*)?", mp.__version__)
    assert importlib.metadata.version("mappedpages") == mp.__version__


def test_cli_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"mappedpages {mp.__version__}"
