"""Pager.create: the permissions of a new file, and errors that name the user's path."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mappedpages as mp
from helpers import check_ok
from mappedpages import _files


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process's umask for the test; the one before comes back afterwards."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


# -- permissions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "kwargs", "expected"),
    [
        (0o022, {}, 0o644),
        (0o077, {}, 0o600),
        (0o002, {}, 0o664),
        (0o000, {}, 0o666),
        (0o022, {"mode": 0o600}, 0o600),
        (0o022, {"mode": 0o660}, 0o640),  # the umask still applies to an explicit mode
        (0o077, {"mode": 0o644}, 0o600),
    ],
    ids=["022", "077", "002", "000", "022-mode600", "022-mode660", "077-mode644"],
)
def test_new_file_mode(
    core: str,
    tmp_path: Path,
    umask: Callable[[int], None],
    mask: int,
    kwargs: dict[str, Any],
    expected: int,
) -> None:
    path = str(tmp_path / "pages.mp")
    umask(mask)
    with mp.Pager.create(path, 1024, **kwargs) as p:
        p.alloc()
    assert _mode(path) == expected
    # the table beside it, where snapshots register, is open to the same users
    assert _mode(path + "-readers") == expected
    if "mode" not in kwargs:  # the same as a file made by open()
        with open(tmp_path / "by-open", "w"):
            pass
        assert _mode(str(tmp_path / "by-open")) == expected
    check_ok(path)
    with mp.ReadOnlyPager.open(path) as ro:
        assert ro.registered and ro.page_count == 16


def test_reopened_file_keeps_its_mode(core: str, path: str, umask: Callable[[int], None]) -> None:
    mp.Pager.create(path, 1024, mode=0o640).close()
    umask(0o077)
    with mp.Pager.open(path) as p:
        p.alloc()
    assert _mode(path) == 0o640 and _mode(path + "-readers") == 0o640


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("0o644", TypeError),
        (0o644 * 1.0, TypeError),
        (True, TypeError),
        (None, TypeError),
        (-1, ValueError),
        (0o10000, ValueError),
    ],
)
def test_bad_mode(core: str, path: str, mode: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="mode"):
        mp.Pager.create(path, mode=mode)  # type: ignore[arg-type]
    assert os.listdir(os.path.dirname(path)) == []


# -- errors name the user's path ------------------------------------------------------------


def _names_only(exc: OSError, path: str) -> None:
    assert exc.filename == path and exc.filename2 is None
    assert ".tmp" not in str(exc) and ".mappedpages-" not in str(exc)
    assert repr(path) in str(exc)


def test_create_in_a_missing_directory(core: str, tmp_path: Path) -> None:
    path = str(tmp_path / "no" / "such" / "pages.mp")
    with pytest.raises(FileNotFoundError) as info:
        mp.Pager.create(path)
    _names_only(info.value, path)
    assert os.listdir(tmp_path) == []


def test_create_under_a_file(core: str, tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"x")
    path = str(tmp_path / "plain" / "pages.mp")
    with pytest.raises(NotADirectoryError) as info:
        mp.Pager.create(path)
    _names_only(info.value, path)


def test_create_on_an_existing_path(core: str, path: str) -> None:
    mp.Pager.create(path).close()
    with pytest.raises(FileExistsError) as info:
        mp.Pager.create(path)
    _names_only(info.value, path)


def test_create_in_a_directory_not_writable(core: str) -> None:
    # root writes anywhere: the attempt runs in a child that gives up root first
    directory = tempfile.mkdtemp(prefix="mappedpages-ro-")
    try:
        os.chmod(directory, 0o555)
        path = os.path.join(directory, "pages.mp")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(read)
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                try:
                    mp.Pager.create(path).close()
                    out: dict[str, Any] = {"created": True}
                except OSError as exc:
                    out = {"type": type(exc).__name__, "errno": exc.errno, "str": str(exc)}
                    out |= {"filename": exc.filename, "filename2": exc.filename2}
                os.write(write, json.dumps(out).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            result = json.loads(f.read())
        os.waitpid(pid, 0)
        assert result["type"] == "PermissionError" and result["errno"] == errno.EACCES
        assert result["filename"] == path and result["filename2"] is None
        assert ".tmp" not in result["str"] and repr(path) in result["str"]
        assert os.listdir(directory) == []
    finally:
        os.chmod(directory, 0o755)
        shutil.rmtree(directory)


class _Faulty:
    """Stands in for ``os`` in ``_files``: the ``nth`` call of ``name`` fails with ``code``."""

    def __init__(self, name: str, nth: int, code: int) -> None:
        self.name, self.left, self.code = name, nth, code

    def __getattr__(self, attr: str) -> Any:
        real = getattr(os, attr)
        if attr != self.name:
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            self.left -= 1
            if self.left == 0:
                raise OSError(self.code, os.strerror(self.code))
            return real(*args, **kwargs)

        return call


@pytest.mark.parametrize(
    ("name", "nth", "code"),
    [
        ("write", 1, errno.ENOSPC),  # the disk is full
        ("fsync", 1, errno.EIO),  # the image does not reach the disk
        ("link", 1, errno.ENOSPC),  # the directory cannot take another name
        ("fsync", 2, errno.EIO),  # the name does not reach the disk: it is taken back
    ],
)
def test_create_fault_names_the_path(
    core: str, path: str, monkeypatch: pytest.MonkeyPatch, name: str, nth: int, code: int
) -> None:
    monkeypatch.setattr(_files, "os", _Faulty(name, nth, code))
    with pytest.raises(OSError) as info:
        mp.Pager.create(path, 1024)
    assert info.value.errno == code
    _names_only(info.value, path)
    assert os.listdir(os.path.dirname(path)) == []  # no temporary file, no half-made file
    monkeypatch.undo()
    mp.Pager.create(path, 1024).close()  # nothing was left in the way
    check_ok(path)


FULL_DISK = """
    import json, resource, signal, sys
    import mappedpages as mp
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the default action would kill us
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))  # less than the initial image
    try:
        mp.Pager.create(sys.argv[1], 4096)
        print(json.dumps({"created": True}))
    except OSError as exc:
        print(json.dumps({"errno": exc.errno, "filename": exc.filename, "str": str(exc)}))
"""


def test_create_past_the_file_size_limit(core: str, path: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FULL_DISK), path],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MAPPEDPAGES_CORE=core),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["errno"] in (errno.EFBIG, errno.ENOSPC)
    assert result["filename"] == path and ".tmp" not in result["str"]
    assert os.listdir(os.path.dirname(path)) == []
