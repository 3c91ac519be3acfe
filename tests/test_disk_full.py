"""A full disk (here: a file-size limit) is a clean OSError at growth, never a dead process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import mappedpages as mp
from helpers import check_ok

CHILD = """
    import errno, json, resource, signal, sys
    import mappedpages as mp
    path, prealloc = sys.argv[1], sys.argv[2] == "1"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the default action would kill us
    limit = 300 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    out = {}
    with mp.Pager.create(path, 1024, preallocate=prealloc) as p:
        ids = []
        try:
            while True:
                ids.append(p.alloc())
        except OSError as exc:
            out["errno"] = exc.errno
        out["committed"] = [int(x) for x in p.iter_allocated_pages()]
        with p.batch():  # a failed bulk call inside a batch: the batch is still usable
            try:
                p.alloc_bulk(10_000)
            except OSError:
                out["bulk_failed"] = True
        p.free(ids[0])  # the pager still works after the failed growth
        again = p.alloc()
        out["freed"], out["reused"] = int(ids[0]), int(again)
        out["final"] = [int(x) for x in p.iter_allocated_pages()]
    print(json.dumps(out))
"""


@pytest.mark.parametrize("prealloc", [True, False], ids=["fallocate", "sparse"])
def test_growth_past_the_limit_is_a_clean_error(core: str, path: str, prealloc: bool) -> None:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), path, "1" if prealloc else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MAPPEDPAGES_CORE=core),
    )
    assert out.returncode == 0, out.stderr  # not killed by SIGXFSZ or SIGBUS
    result = json.loads(out.stdout)
    assert result["errno"] in (27, 28)  # EFBIG (the limit) or ENOSPC (a full disk)
    assert result["bulk_failed"]
    assert result["reused"] == result["freed"]
    assert len(result["committed"]) > 100
    check_ok(path)
    with mp.Pager.open(path) as p:
        assert [int(x) for x in p.iter_allocated_pages()] == result["final"]
        assert os.path.getsize(path) <= 300 * 1024
