"""The processes of the snapshot proofs (tests/test_snapshot_proofs.py), run as
``python snapshot_workers.py ROLE PATH [ARGS]`` with MAPPEDPAGES_CORE set by the test.

- ``writer``: rewrites protected pages without ever pausing, and now and then writes pages in
  a batch that it rolls back; every page it writes says which commit it belongs to.
- ``hold`` / ``refresh``: readers that check every page they read (see ``verify``); ``hold``
  keeps its views across many commits, ``refresh`` moves to the newest commit before each
  read. Both reopen now and then, and print their counts as JSON at the end.
- ``cow``: a copy-on-write linked list of regular pages whose head is in a protected page
  (``sealed-cow``: durably, its nodes sealed, records retired under the readers);
  ``walk``: a reader that walks it from its snapshot.
- ``sleep``: opens a snapshot, says so, and waits to be killed.

A page written by ``writer`` holds: the generation of the commit it is written for (8 bytes),
its slot (4), a tag (4: 0, or ROLLED_BACK for pages written in a batch that is rolled back),
a filling derived from those, and the CRC32C of everything before in its last 4 bytes.
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import time

import mappedpages as mp

ROLLED_BACK = 0xBAD
SLOTS = 16
HEAD = struct.Struct("<QII")


def page_bytes(ps: int, gen: int, slot: int, tag: int) -> bytes:
    head = HEAD.pack(gen, slot, tag)
    fill = (head * (ps // len(head) + 1))[: ps - len(head) - 4]
    body = head + fill
    return body + struct.pack("<I", mp.crc32c(body))


def verify(page: bytes, slot: int, snapshot_gen: int) -> tuple[str, int]:
    """'ok' (and the page's generation), or what is wrong with the page a snapshot read."""
    ps = len(page)
    gen, where, tag = HEAD.unpack_from(page, 0)
    if gen == 0 and not any(page):
        return "ok", 0  # not written yet
    if struct.unpack_from("<I", page, ps - 4)[0] != mp.crc32c(page[:-4]) or where != slot:
        return "torn", gen
    if page != page_bytes(ps, gen, slot, tag):
        return "torn", gen
    if tag == ROLLED_BACK or gen > snapshot_gen:
        return "never committed", gen
    return "ok", gen


def writer(path: str, sync: bool, stop_file: str) -> None:
    rng = random.Random(1)
    with mp.Pager.open(path, sync=sync) as p:
        ids = sorted(p.iter_allocated_protected_pages())
        ps = p.page_size
        commits = rollbacks = 0
        while not os.path.exists(stop_file):
            if commits % 10 == 9:  # a batch that is rolled back: never committed
                try:
                    with p.batch():
                        for _ in range(3):
                            x = rng.choice(ids)
                            with x.get_mut(p) as w:
                                w.page_mut()[:] = page_bytes(
                                    ps, p.generation + 1, int(x), ROLLED_BACK
                                )
                        p.free(p.alloc())
                        raise KeyError("rolled back")
                except KeyError:
                    rollbacks += 1
            x = rng.choice(ids)
            with x.get_mut(p) as w:
                w.page_mut()[:] = page_bytes(ps, p.generation + 1, int(x), 0)
            commits += 1
    print(json.dumps({"commits": commits, "rollbacks": rollbacks}))


def reader(path: str, mode: str, reads: int, reopen_every: int) -> None:
    ids: list[mp.ProtectedPageId] = []
    views: dict[int, memoryview] = {}
    first: dict[int, bytes] = {}
    counts = {"reads": 0, "ok": 0, "torn": 0, "never committed": 0, "backwards": 0}
    counts |= {"opens": 0, "refreshes": 0, "unavailable": 0, "moved": 0}
    newest: dict[int, int] = {}  # slot -> the newest generation read (refreshing readers)
    ro = None
    while counts["reads"] < reads:
        if ro is None or counts["reads"] % reopen_every == 0:
            if ro is not None:
                ro.close()
            try:
                ro = mp.ReadOnlyPager.open(path)
            except mp.Unavailable:
                counts["unavailable"] += 1
                ro = None
                continue
            counts["opens"] += 1
            ids = list(ro.iter_allocated_protected_pages())
            views = {int(x): ro.get_protected_page(x) for x in ids}
            first = {slot: bytes(v) for slot, v in views.items()}
        if mode == "refresh":
            try:
                counts["moved"] += ro.refresh()
            except mp.Unavailable:
                counts["unavailable"] += 1
            counts["refreshes"] += 1
            x = ids[counts["reads"] % len(ids)]
            page, slot = bytes(ro.get_protected_page(x)), int(x)
        else:  # the views taken at open, read again and again across commits
            slot = int(ids[counts["reads"] % len(ids)])
            page = bytes(views[slot])
            if page != first[slot]:
                counts["torn"] += 1  # a view of a snapshot changed under it
        what, gen = verify(page, slot, ro.generation)
        counts["reads"] += 1
        counts[what] += 1
        if mode == "refresh":
            if gen < newest.get(slot, 0):
                counts["backwards"] += 1
            newest[slot] = max(newest.get(slot, 0), gen)
    assert ro is not None
    ro.close()
    print(json.dumps(counts))


# -- a copy-on-write linked list --------------------------------------------------------------

NODE = struct.Struct("<QQQ")  # version, index in the list, next page (0: the end)
ROOT = struct.Struct("<QQQ")  # version, first page, length


def cow(path: str, length: int, steps: int, stop_file: str, sealed: bool = False) -> None:
    """Replace the whole list ``steps`` times (or until ``stop_file`` appears): new nodes, the
    root switched, the old nodes freed, all in one batch each. ``sealed``: durably, the nodes
    written with write_page and flushed (so that each commit's record vouches for them), and
    every third version a node's unread tail rewritten in place after its commit, which
    retires the record while readers may be reading it."""
    with mp.Pager.open(path, sync=sealed) as p:
        (root,) = list(p.iter_allocated_protected_pages())
        old: list[mp.PageId] = []
        version = 0
        sizes = []
        while (steps < 0 or version < steps) and not os.path.exists(stop_file):
            version += 1
            with p.batch():
                nodes = p.alloc_bulk(length)
                for i, pid in enumerate(nodes):
                    nxt = int(nodes[i + 1]) if i + 1 < length else 0
                    if sealed:
                        p.write_page(pid, NODE.pack(version, i, nxt))
                    else:
                        NODE.pack_into(p.get_page_mut(pid), 0, version, i, nxt)
                if sealed:
                    p.flush(nodes)
                with root.get_mut(p) as w:
                    ROOT.pack_into(w.page_mut(), 0, version, int(nodes[0]), length)
                p.free_bulk(old)
                old = nodes
            if sealed and version % 3 == 0:
                p.write_page(nodes[version % length], struct.pack("<Q", version), 512)
            sizes.append(p.page_count)
    print(json.dumps({"versions": version, "sizes": sizes[-200:] if sizes else []}))


def walk(path: str, walks: int) -> None:
    counts = {"walks": 0, "inconsistent": 0, "unavailable": 0}
    with mp.ReadOnlyPager.open(path) as ro:
        (root,) = list(ro.iter_allocated_protected_pages())
        while counts["walks"] < walks:
            try:
                ro.refresh()
            except mp.Unavailable:
                counts["unavailable"] += 1
                continue
            version, page, length = ROOT.unpack_from(ro.get_protected_page(root), 0)
            seen = 0
            while page and seen <= length:
                v, i, nxt = NODE.unpack_from(ro.get_page(mp.PageId(page, ro.page_size)), 0)
                if v != version or i != seen:
                    break
                seen, page = seen + 1, nxt
            counts["walks"] += 1
            counts["inconsistent"] += version > 0 and (seen != length or page != 0)
    print(json.dumps(counts))


def sleep(path: str) -> None:
    ro = mp.ReadOnlyPager.open(path)
    print(ro.generation, flush=True)
    time.sleep(600)


if __name__ == "__main__":
    role, path, *args = sys.argv[1:]
    if role == "writer":
        writer(path, args[0] == "1", args[1])
    elif role in ("hold", "refresh"):
        reader(path, role, int(args[0]), int(args[1]))
    elif role in ("cow", "sealed-cow"):
        cow(path, int(args[0]), int(args[1]), args[2], role == "sealed-cow")
    elif role == "walk":
        walk(path, int(args[0]))
    elif role == "sleep":
        sleep(path)
    else:
        raise SystemExit(f"unknown role {role}")
