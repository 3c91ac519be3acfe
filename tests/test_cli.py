"""The command line: info, check, dump and --help."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mappedpages as mp
from mappedpages.checker import check_file
from mappedpages.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mappedpages", *args], capture_output=True, text=True, timeout=120
    )


def test_info_and_check(core: str, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with mp.Pager.create(path, 2048) as p:
        p.alloc_bulk(10)
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "page size" in out and "2048" in out and "generation" in out
    assert main(["info", "--json", path]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["page_size"] == 2048
    assert info["allocated_data_pages"] == 10
    assert info["commit_record"] in (0, 1) and info["format_version"] == 2
    assert main(["check", path]) == 0
    assert "OK" in capsys.readouterr().out


def _bitmap_root(path: str) -> int:
    """The page of the bitmap tree's root that the record in force names."""
    return _record_field(path, "bitmap_root")


def _record_field(path: str, field: str) -> int:
    from mappedpages import format as fmt

    report = check_file(path, mp.crc32c)
    ps = report.page_size
    with open(path, "rb") as f:
        f.seek((1 + report.record) * ps)
        rec = fmt.Record(*fmt.RECORD.unpack_from(f.read(128), 0))
    return int(getattr(rec, field))


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_check_reports_damage(core: str, path: str) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(10)
    _flip(path, _bitmap_root(path) * 1024 + 200)  # both records name this leaf
    out = _cli("check", path)
    assert out.returncode == 1
    assert "bitmap leaf" in out.stdout and "Traceback" not in out.stdout + out.stderr
    out = _cli("info", "--json", path)
    assert out.returncode == 1 and json.loads(out.stdout)["ok"] is False


def test_missing_and_foreign_files(tmp_path: object) -> None:
    missing = os.path.join(str(tmp_path), "nope.mp")
    out = _cli("check", missing)
    assert out.returncode == 2
    assert "No such file" in out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr
    foreign = os.path.join(str(tmp_path), "foreign.txt")
    with open(foreign, "w") as f:
        f.write("not a page file\n" * 200)
    out = _cli("check", foreign)
    assert out.returncode == 1 and "not a mappedpages file" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
    out = _cli("info", foreign)
    assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr


def test_no_command_is_a_usage_error() -> None:
    out = _cli()
    assert out.returncode == 2 and "usage" in out.stderr


# -- dump -----------------------------------------------------------------------------------


def test_dump_superblock(core: str, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(4)
    assert main(["dump", path, "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("00000000  4d 41 50 50 45 44 50 47")
    assert lines[0].endswith("|MAPPEDPG........|")
    assert "*" in lines  # the zeros after the identity collapse
    assert len(lines) < 1024 // 16
    assert lines[-1].startswith(f"{1024 - 16:08x}")  # the dump still shows where it ends
    assert main(["dump", path, "2"]) == 0  # offsets count from the start of the file
    assert capsys.readouterr().out.startswith("00000800  ")


def test_dump_length(core: str, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with mp.Pager.create(path, 1024):
        pass
    assert main(["dump", path, "0", "--length", "32"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2 and "MAPPEDPG" in out
    assert main(["dump", path, "0", "--length", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].endswith("|....|")


def test_dump_zero_collapse() -> None:
    from mappedpages.cli import hex_lines

    data = b"A" * 16 + bytes(64) + b"B" * 16
    lines = list(hex_lines(data, 0x100))
    assert [line.split()[0] for line in lines] == ["00000100", "00000110", "*", "00000150"]
    zeros = "00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|"
    # two zero lines: nothing to collapse; three: the middle one becomes "*"
    assert list(hex_lines(bytes(32))) == [f"00000000  {zeros}", f"00000010  {zeros}"]
    assert list(hex_lines(bytes(48))) == [f"00000000  {zeros}", "*", f"00000020  {zeros}"]
    assert list(hex_lines(b"xyz")) == ["00000000  78 79 7a" + " " * 41 + "|xyz|"]


@pytest.mark.parametrize("page", ["16", "-1", "99999", "abc"])
def test_dump_bad_page(core: str, path: str, page: str, capsys: pytest.CaptureFixture[str]) -> None:
    with mp.Pager.create(path, 1024):
        pass
    assert os.path.getsize(path) // 1024 == 16
    assert main(["dump", path, page]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "Traceback" not in captured.err and "dump" in captured.err
    assert main(["dump", path, "15"]) == 0  # the last page is fine


def test_dump_foreign_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for content in (b"not a page file\n" * 200, b"MAPPEDPG", b""):
        foreign = tmp_path / "foreign.bin"
        foreign.write_bytes(content)
        assert main(["dump", str(foreign), "0"]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert len(captured.err.strip().splitlines()) == 1
        assert "not a mappedpages file" in captured.err
    out = _cli("dump", str(tmp_path / "foreign.bin"), "0")  # and in a real process
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert main(["dump", str(tmp_path / "nope.mp"), "0"]) == 2
    assert "No such file" in capsys.readouterr().err


def test_dump_while_a_writer_holds_the_file(
    core: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with mp.Pager.create(path, 1024) as p:
        (page,) = p.alloc_bulk(1)
        assert main(["dump", path, str(int(page)), "-n", "16"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 1


# -- check ----------------------------------------------------------------------------------


def test_check_sound_file(core: str, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(5)
    assert main(["check", path]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and "OK" in out and "0 problems" in out
    assert main(["check", "--verbose", path]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_verbose_lists_problems(
    core: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(5)
        p.alloc_bulk(3)
    _flip(path, _bitmap_root(path) * 1024 + 200)  # a byte of the bitmap's root leaf
    report = check_file(path, mp.crc32c)
    assert not report.ok
    assert main(["check", path]) == 1
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    n = len(report.problems)
    assert f"{n} problem" in out and report.problems[0] in out
    assert main(["check", "--verbose", path]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"{n} problem" in lines[0]
    listed = [line for line in lines[1:] if line.startswith("  problem: ")]
    assert [line.removeprefix("  problem: ") for line in listed] == report.problems
    assert any("bitmap leaf" in line for line in listed)
    notes = [line for line in lines[1:] if line.startswith("  note: ")]
    assert len(listed) + len(notes) == len(lines) - 1


def test_check_verbose_shows_notes(
    core: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(2)
    older = 1 - _record_field(path, "generation") % 2  # the slot of the commit before
    with open(path, "r+b") as f:  # a torn record (not the one in force): a note, no problem
        f.seek((1 + older) * 1024 + 8)
        f.write(b"\x00" * 4)
    assert main(["check", "-v", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "OK" in lines[0] and "1 note" in lines[0]
    assert lines[1].startswith("  note: ") and "commit record" in lines[1]


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_check_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    from mappedpages.cli import _Progress

    tty = _FakeTTY()
    progress = _Progress(tty)
    for k in range(0, 3000, 1024):
        progress(k, 3000)
    progress(3000, 3000)
    progress.clear()
    text = tty.getvalue()
    assert (
        "\rchecking: 0/3000 bitmap leaves" in text and "checking: 3000/3000 bitmap leaves" in text
    )
    assert text.endswith("\r") and "\n" not in text
    small = _FakeTTY()  # few leaves: nothing shown
    progress = _Progress(small)
    progress(0, 1024)
    progress(1024, 1024)
    progress.clear()
    assert small.getvalue() == ""
    pipe = io.StringIO()  # not a terminal: nothing shown
    progress = _Progress(pipe)
    progress(0, 5000)
    progress.clear()
    assert pipe.getvalue() == ""


def test_check_quiet_stderr_when_not_a_tty(
    core: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(2)
    assert main(["check", path]) == 0
    assert capsys.readouterr().err == ""


# -- help and info --------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["info"], ["check"], ["dump"], ["readers"], ["bench"]])
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mappedpages" in out and "exit status" in out
    for code in ("0  success", "1  problems found", "2  usage error"):
        assert code in out


def test_module_docstring_documents_exit_codes() -> None:
    import mappedpages.cli as cli

    doc = cli.__doc__ or ""
    assert "Exit status" in doc and all(f"* {code} --" in doc for code in (0, 1, 2))


def test_info_protected_pages(core: str, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(2)
        p.alloc_protected_bulk(3)
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("protected pages")]
    assert line.split()[-1] == "3"
    assert main(["info", "--json", path]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["protected_pages"] == 3 and info["internal_pages"] > 3 and info["ok"] is True
    assert info["allocated_data_pages"] == 2


# -- damaged, foreign and missing files -----------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"mappedpages {mp.__version__}"
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"mappedpages {mp.__version__}"


def _damaged(kind: str, path: str) -> int:
    """Make ``path`` a file damaged as ``kind`` says; return the exit status it must give."""
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(5)
        p.alloc_protected_bulk(2)
    with open(path, "rb") as f:
        good = f.read()
    if kind == "missing":
        os.unlink(path)
        return 2
    if kind == "directory":
        os.unlink(path)
        os.mkdir(path)
        return 2
    data = bytearray(good)
    if kind == "zero-filled":
        data = bytearray(len(good))
    elif kind == "empty":
        data = bytearray()
    elif kind.startswith("truncated-"):
        data = data[: int(kind.removeprefix("truncated-"))]
    elif kind.startswith("identity-byte-"):
        data[int(kind.removeprefix("identity-byte-"))] ^= 0x10
    elif kind == "foreign":
        data = bytearray(b"not a page file\n" * 200)
    else:
        raise AssertionError(kind)
    with open(path, "wb") as f:
        f.write(data)
    return 1


DAMAGE = [
    "zero-filled",
    "empty",
    "truncated-40",  # inside the identity
    "truncated-1500",  # inside the first commit record
    "truncated-5000",  # the records read, the state they name does not
    "identity-byte-0",  # the magic
    "identity-byte-12",  # the page size
    "identity-byte-40",  # the file id
    "identity-byte-63",  # the identity's checksum
    "identity-byte-300",  # past the identity, where page 0 must be zero
    "foreign",
    "missing",
    "directory",
]


def _good_keys(path: str, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], list[str]]:
    good = path + ".good"
    mp.Pager.create(good, 1024).close()
    keys = []
    for command in ("info", "check"):
        assert main([command, "--json", good]) == 0
        keys.append(list(json.loads(capsys.readouterr().out)))
    return keys[0], keys[1]


@pytest.mark.parametrize("kind", DAMAGE)
def test_json_on_damaged_files(
    core: str, path: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    info_keys, check_keys = _good_keys(path, capsys)
    status = _damaged(kind, path)
    for command, keys in (("info", info_keys), ("check", check_keys)):
        assert main([command, "--json", path]) == status
        captured = capsys.readouterr()
        (line,) = captured.out.splitlines()  # one object, alone on stdout
        out = json.loads(line)
        assert list(out) == keys  # the same fields as for a sound file
        assert out["ok"] is False and out["file"] == path
        assert (out["error"] is None) == (status == 1)  # a file that could not be read says why
        assert out["problems"] or out["error"]
        if command == "info":
            for key, value in out.items():
                assert value is None or not isinstance(value, int) or value >= 0, (key, value)
            if out["commit_record"] is None:
                assert out["internal_pages"] is None and out["checkpoint"] is None
            if out["page_count"] is None:
                assert out["free_pages"] is None and out["allocated_data_pages"] is None
        if status == 2:
            assert len(captured.err.strip().splitlines()) == 1  # and the usual line on stderr


@pytest.mark.parametrize("kind", DAMAGE)
def test_info_text_on_damaged_files(
    core: str, path: str, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _damaged(kind, path)
    assert main(["info", path]) == status
    captured = capsys.readouterr()
    if status == 2:
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
        return
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in captured.out.splitlines())
    assert lines.pop("file") == path
    assert re.fullmatch(r"[1-9]\d* \(run 'mappedpages check'\)", lines.pop("problems"))
    for key, value in lines.items():  # a number that was read, or "-" for one that was not
        assert value == "-" or int(value) >= 0, (key, value)
    # counts belong to a state that was read: zeros shown for one that was not are nonsense
    assert lines["page count"] in ("-", "16")
    assert "Traceback" not in captured.err


def test_truncated_file_shows_no_counts(
    core: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _damaged("truncated-5000", path)
    assert main(["info", "--json", path]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["page_size"] == 1024 and "truncated" in out["problems"][0]
    assert out["page_count"] is None and out["free_pages"] is None
    assert out["protected_pages"] is None and out["generation"] is None


def test_json_on_every_damaged_byte_of_the_header(
    core: str, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any byte of the identity and both records damaged: one JSON object, exit 0 iff ok."""
    with mp.Pager.create(path, 1024) as p:
        p.alloc_bulk(5)
        p.alloc_protected_bulk(2)
    with open(path, "rb") as f:
        good = f.read()
    damaged = 0
    for offset in [*range(64), *range(1024, 3 * 1024, 13)]:
        data = bytearray(good)
        data[offset] ^= 0x41
        with open(path, "wb") as f:
            f.write(data)
        for command in ("info", "check"):
            status = main([command, "--json", path])
            (line,) = capsys.readouterr().out.splitlines()
            out = json.loads(line)
            assert status == (0 if out["ok"] else 1), (offset, out)
            damaged += not out["ok"]
    assert damaged >= 2 * 64  # every byte of the identity is covered by its checksum


def test_json_when_the_checker_fails(
    path: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failure of the checker itself still leaves one JSON object on stdout, then shows."""
    import mappedpages.cli as cli

    def broken(*args: object) -> None:
        raise RuntimeError("the checker broke")

    monkeypatch.setattr(cli, "check_file", broken)
    for command in ("info", "check"):
        with pytest.raises(RuntimeError):
            main([command, "--json", path])
        out = json.loads(capsys.readouterr().out)
        assert out["ok"] is False and out["error"] == "RuntimeError: the checker broke"
