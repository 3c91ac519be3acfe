"""The reader table under concurrent use: what a writer reads of a slot while its owner, in
another process, changes it. The table's rules are shared by both cores (_readertable.py)."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mappedpages as mp
from mappedpages import _readertable
from mappedpages import format as fmt

# Every byte differs between the two: a store made a byte at a time, or cleared first, is seen
# as 0 ("no snapshot here") or as a mix such as 0x1_FFFF_FFFF (a generation never stored).
A, B = (1 << 32) - 1, 1 << 32

_OWNER = textwrap.dedent(
    """
    import os, sys
    import mappedpages as mp
    from mappedpages import _readertable, format as fmt
    path, ready, stop = sys.argv[1:]
    fd = os.open(path, os.O_RDONLY)
    table = _readertable.ReaderTable.open(path, fmt.Header(fd, 0, mp.crc32c).file_id)
    slot = table.claim()
    table.set_generation(slot, {A})
    with open(ready + ".tmp", "w") as f:
        f.write(str(slot))
    os.rename(ready + ".tmp", ready)
    n = 0
    while not os.path.exists(stop):
        for _ in range(1000):
            table.set_generation(slot, {B})
            table.set_generation(slot, {A})
        n += 2000
    print(n)
    """
).format(A=A, B=B)


def test_a_slots_generation_is_seen_whole_while_its_owner_changes_it(tmp_path: Path) -> None:
    path = str(tmp_path / "pages.mp")
    mp.Pager.create(path, 1024).close()
    ready, stop = str(tmp_path / "ready"), str(tmp_path / "stop")
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, path, ready, stop], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            assert owner.poll() is None and time.monotonic() < deadline, "the owner did not start"
            time.sleep(0.01)
        slot = int(Path(ready).read_text())
        fd = os.open(path, os.O_RDONLY)
        table = _readertable.ReaderTable.open(path, fmt.Header(fd, 0, mp.crc32c).file_id)
        assert table is not None
        os.close(fd)
        off = fmt.table_slot_offset(slot)
        seen: collections.Counter[int] = collections.Counter()
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            for _ in range(10000):
                seen[table.words.load64(off)] += 1  # what the writer's scan loads
        table.close()
    finally:
        Path(stop).touch()
        out, _ = owner.communicate(timeout=60)
    assert owner.returncode == 0
    assert int(out) > 0
    assert set(seen) <= {A, B}, {hex(v): n for v, n in seen.items() if v not in (A, B)}
    assert seen[A] and seen[B], seen  # it really was read while it changed
