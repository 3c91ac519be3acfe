"""A small persistent key -> value store on top of mappedpages: a worked example.

Keys and values are ``bytes``. The file is a mappedpages file used by nothing else.

Layout
------
- **Root**: protected page slot 0, the first protected page of the file. It holds a magic, a
  format version, the number of buckets and the sub-page size. It is written once, when the
  store is created, and is how ``open`` recognises one of its files.
- **Buckets**: protected pages in slots ``1 .. n_buckets``, allocated by one
  ``alloc_protected_bulk`` right after the root, so that their slots are consecutive and the
  root only has to record how many there are. Key ``k`` lives in bucket
  ``crc32c(k) % n_buckets`` (a stable hash: Python's ``hash`` of bytes changes per process).
  A bucket page is ``u32 used`` followed by ``used`` bytes of entries, each
  ``u8 key length, u8 kind, u32 value length, u64 location`` and then the key bytes.
- **Values**: up to ``sub_size`` bytes (256 for pages up to 16 KiB) in a sub-page of a
  ``SubPageAllocator`` (kind 1, location ``parent << 24 | slot``); larger ones in a regular page
  of their own (kind 2, location = page number).

Counts are not stored: ``len`` is derived from the buckets on open. The sub-page allocator's
state is memory-only, so ``open`` rebuilds it from the sub-page ids the buckets mention. The
buckets are also mirrored in memory (one dict per bucket, key -> encoded entry) so that a
lookup does not re-parse a page and a rewrite is a single ``b"".join``; the protected pages
remain the only durable record.

Crash safety
------------
A ``put`` writes the value to a *new* location first (flushed when ``sync`` is on), then
rewrites the key's bucket through its protected-page writer: that one atomic commit switches
the key to the new value. Only then is the old location freed. ``delete`` rewrites the bucket,
then frees. A crash at any point leaves every key with its old or its new value, never a torn
one. What a crash *can* leave behind is a value location that was allocated but never linked
(or unlinked but not yet freed); ``open`` reclaims those: allocated pages that no bucket entry
refers to are freed in one commit, and sub-page slots nobody refers to are simply not restored.

``put_many`` / ``delete_many`` do the same for many keys inside one ``pager.batch()``: new
values first, every touched bucket rewritten, one commit for all of it, then the frees. That
is all-or-nothing, and far cheaper than one commit per key when the core is the pure-Python one.

With ``sync=False`` (bulk loading, tests) the pager skips its sync barriers and values are not
flushed: a killed process still loses nothing committed, but a power loss may.

The bucket count is fixed at creation (no rehashing). A bucket that cannot take another entry
makes ``put`` raise ``ValueError("bucket full")``; 2048 buckets of 4 KiB hold 100,000 keys of
8-16 bytes with a wide margin (about 49 entries of at most 30 bytes per bucket on average,
room for 136).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable, Iterator
from types import TracebackType

import mappedpages as mp

MAGIC = b"MPKVSTOR"
VERSION = 1
DEFAULT_BUCKETS = 2048
MAX_KEY = 255

_ROOT = struct.Struct("<8sIII")  # magic, version, bucket count, sub-page size
_USED = struct.Struct("<I")  # bytes of entries in a bucket page
_ENTRY = struct.Struct("<BBIQ")  # key length, kind, value length, location; then the key
_SUB, _PAGE = 1, 2  # entry kinds
_SLOT_BITS = 24  # a sub-page location is parent << 24 | slot


class KVStore:
    """A persistent ``bytes -> bytes`` map in one mappedpages file. Not thread-safe."""

    def __init__(self, pager: mp.Pager, n_buckets: int, sub_size: int, sync: bool) -> None:
        """Use ``KVStore.open``; this attaches to a pager whose root was already checked."""
        self._pager = pager
        self._ps = pager.page_size
        self._sync = sync
        self._sub = sub_size
        self._bucket_ids = [mp.ProtectedPageId(i, self._ps) for i in range(1, n_buckets + 1)]
        self._room = self._ps - _USED.size
        self.max_value = self._ps - 64
        self._buckets: list[dict[bytes, bytes]] = []
        self._used: list[int] = []
        self._count = 0
        self._small = mp.SubPageAllocator(pager, sub_size)
        self._reload()

    # -- opening and closing ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        page_size: int = 4096,
        *,
        sync: bool = True,
        buckets: int = DEFAULT_BUCKETS,
    ) -> KVStore:
        """Open the store at ``path``, creating it (``page_size``, ``buckets``) if missing.

        ``ValueError`` if the file exists but is not a store.
        """
        spath = os.fspath(path)
        if not os.path.exists(spath):
            cls._create(spath, page_size, buckets)
        try:
            pager = mp.Pager.open(spath, sync=sync)
        except mp.CorruptSuperblock as e:
            raise ValueError(f"{spath} is not a key-value store: {e}") from e
        try:
            n_buckets, sub_size = cls._check_root(pager)
            store = cls(pager, n_buckets, sub_size, sync)
        except BaseException:
            pager.close()
            raise
        return store

    @staticmethod
    def _create(path: str, page_size: int, n_buckets: int) -> None:
        """Build the file under a temporary name, then link it into place.

        The root and the buckets take two commits; building them elsewhere means that a crash
        half-way never leaves a file at ``path`` that ``open`` would reject as foreign.
        """
        if not 1 <= n_buckets <= 2**31:
            raise ValueError(f"bucket count {n_buckets} out of range")
        tmp = path + ".creating"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a crash during an earlier creation
        with mp.Pager.create(tmp, page_size) as pager:
            root = pager.alloc_protected()
            ids = pager.alloc_protected_bulk(n_buckets)
            if int(root) != 0 or [int(b) for b in ids] != list(range(1, n_buckets + 1)):
                raise RuntimeError("a fresh file did not hand out protected slots 0, 1, 2...")
            sub_size = max(256, page_size // 64)  # a SubPageAllocator allows 64 slots per page
            with root.get_mut(pager) as w:
                _ROOT.pack_into(w.page_mut(), 0, MAGIC, VERSION, n_buckets, sub_size)
        try:
            os.link(tmp, path)  # fails, rather than overwrite, if someone else created it
        finally:
            os.unlink(tmp)
        dirfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dirfd)  # the new name survives a power loss
        finally:
            os.close(dirfd)

    @staticmethod
    def _check_root(pager: mp.Pager) -> tuple[int, int]:
        """The bucket count and sub-page size from the root, or ``ValueError``."""
        root = mp.ProtectedPageId(0, pager.page_size)
        first = next(iter(pager.iter_allocated_protected_pages()), None)
        if first != root:
            raise ValueError(f"{pager.path} is not a key-value store (no root page)")
        magic, version, n_buckets, sub_size = _ROOT.unpack_from(root.get(pager), 0)
        if magic != MAGIC:
            raise ValueError(f"{pager.path} is not a key-value store (bad magic)")
        if version != VERSION:
            raise ValueError(f"{pager.path}: unsupported store version {version}")
        allocated = {int(p) for p in pager.iter_allocated_protected_pages()}
        if not allocated.issuperset(range(1, n_buckets + 1)):
            raise ValueError(f"{pager.path}: bucket pages are missing")
        return n_buckets, sub_size

    def _reload(self) -> None:
        """(Re)build every in-memory structure from the committed state of the file."""
        self._buckets, self._used, self._count = [], [], 0
        sub_ids, pages = self._load()
        self._small = mp.SubPageAllocator.restore(self._pager, self._sub, sub_ids)
        self._reclaim(pages | {int(sid.parent) for sid in sub_ids})

    def _load(self) -> tuple[list[mp.SubPageId], set[int]]:
        """Mirror every bucket in memory; return the sub-pages and pages the entries use."""
        ps, esize, unpack = self._ps, _ENTRY.size, _ENTRY.unpack_from
        mask = (1 << _SLOT_BITS) - 1
        sub_ids: list[mp.SubPageId] = []
        pages: set[int] = set()
        for bid in self._bucket_ids:
            data = bytes(bid.get(self._pager))
            (used,) = _USED.unpack_from(data, 0)
            if used > self._room:
                raise ValueError(f"{self._pager.path}: bucket {int(bid)} is damaged")
            entries: dict[bytes, bytes] = {}
            pos, end = _USED.size, _USED.size + used
            while pos < end:
                klen, kind, _vlen, loc = unpack(data, pos)
                stop = pos + esize + klen
                entries[data[pos + esize : stop]] = data[pos:stop]
                if kind == _SUB:
                    parent = mp.PageId(loc >> _SLOT_BITS, ps)
                    sub_ids.append(mp.SubPageId(parent, loc & mask, self._sub))
                else:
                    pages.add(loc)
                pos = stop
            self._buckets.append(entries)
            self._used.append(used)
            self._count += len(entries)
        return sub_ids, pages

    def _reclaim(self, referenced: set[int]) -> None:
        """Free the pages a crash left allocated but unreferenced (one commit, if any)."""
        leaked = [p for p in self._pager.iter_allocated_pages() if int(p) not in referenced]
        if leaked:
            self._pager.free_bulk(leaked)

    def close(self) -> None:
        """Close the file; committed operations are durable (``close`` flushes)."""
        self._pager.close()

    def __enter__(self) -> KVStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def _bucket(self, key: bytes) -> int:
        return mp.crc32c(key) % len(self._bucket_ids)

    def _read(self, entry: bytes) -> bytes:
        _klen, kind, vlen, loc = _ENTRY.unpack_from(entry, 0)
        if kind == _SUB:
            start = (loc & ((1 << _SLOT_BITS) - 1)) * self._sub
            page = self._pager.get_page(mp.PageId(loc >> _SLOT_BITS, self._ps))
            return bytes(page[start : start + vlen])
        return bytes(self._pager.get_page(mp.PageId(loc, self._ps))[:vlen])

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        entry = self._buckets[self._bucket(key)].get(key)
        return None if entry is None else self._read(entry)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and key in self._buckets[self._bucket(key)]

    def __len__(self) -> int:
        return self._count

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value), bucket by bucket; do not modify the store while iterating."""
        for entries in self._buckets:
            for key, entry in list(entries.items()):
                yield key, self._read(entry)

    # -- writing ---------------------------------------------------------------------------

    def _commit(self, b: int, entries: dict[bytes, bytes], used: int) -> None:
        """Rewrite bucket ``b`` as ``entries``: one atomic commit."""
        with self._bucket_ids[b].get_mut(self._pager) as w:
            page = w.page_mut()
            _USED.pack_into(page, 0, used)
            page[_USED.size : _USED.size + used] = b"".join(entries.values())

    def _sub_id(self, entry: bytes) -> mp.SubPageId:
        loc = _ENTRY.unpack_from(entry, 0)[3]
        parent = mp.PageId(loc >> _SLOT_BITS, self._ps)
        return mp.SubPageId(parent, loc & ((1 << _SLOT_BITS) - 1), self._sub)

    def _page_id(self, entry: bytes) -> mp.PageId:
        pid: mp.PageId = mp.PageId(_ENTRY.unpack_from(entry, 0)[3], self._ps)
        return pid

    def _free(self, entry: bytes) -> None:
        if entry[1] == _SUB:
            self._small.free(self._sub_id(entry))
        else:
            self._pager.free(self._page_id(entry))

    def _check(self, key: bytes, value: bytes) -> None:
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError("keys and values are bytes")
        if len(key) > MAX_KEY:
            raise ValueError(f"key of {len(key)} bytes; at most {MAX_KEY}")
        if len(value) > self.max_value:
            raise ValueError(f"value of {len(value)} bytes; at most {self.max_value}")

    def _write_value(self, key: bytes, value: bytes) -> tuple[bytes, mp.PageId]:
        """Put ``value`` in a new location; its bucket entry and the page it went to."""
        if len(value) <= self._sub:
            sid = self._small.alloc()
            sid.get_mut(self._small)[: len(value)] = value
            page: mp.PageId = sid.parent
            kind, loc = _SUB, int(page) << _SLOT_BITS | sid.slot
        else:
            page = self._pager.alloc()
            page.get_mut(self._pager)[: len(value)] = value
            kind, loc = _PAGE, int(page)
        return _ENTRY.pack(len(key), kind, len(value), loc) + key, page

    def put(self, key: bytes, value: bytes) -> None:
        """Set ``key`` to ``value``; the old value stays intact until the switch commits."""
        self._check(key, value)
        b = self._bucket(key)
        entries = self._buckets[b]
        old = entries.get(key)
        used = self._used[b] + _ENTRY.size + len(key) - (0 if old is None else len(old))
        if used > self._room:
            raise ValueError("bucket full")  # checked before anything is allocated
        # 1. The value goes to a new location, which no committed entry refers to.
        entry, page = self._write_value(key, value)
        if self._sync:
            self._pager.flush([page])  # durable before the bucket can point at it
        # 2. One commit switches the key over. On failure the new location is given back.
        entries[key] = entry
        try:
            self._commit(b, entries, used)
        except BaseException:
            if old is None:
                del entries[key]
            else:
                entries[key] = old
            with contextlib.suppress(mp.MappedPageError):
                self._free(entry)
            raise
        self._used[b] = used
        # 3. Only now is the old value unreachable; a crash before this leaks it until open.
        if old is None:
            self._count += 1
        else:
            self._free(old)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; False if it was not there."""
        b = self._bucket(key)
        entries = self._buckets[b]
        old = entries.pop(key, None)
        if old is None:
            return False
        used = self._used[b] - len(old)
        try:
            self._commit(b, entries, used)
        except BaseException:
            entries[key] = old
            raise
        self._used[b] = used
        self._count -= 1
        self._free(old)
        return True

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """``put`` every pair, all in one commit: after a crash or an error, all or none."""
        self._apply(list(items))

    def delete_many(self, keys: Iterable[bytes]) -> int:
        """``delete`` every key in one commit, all or none; how many were there."""
        return self._apply([(key, None) for key in keys])

    def _apply(self, ops: list[tuple[bytes, bytes | None]]) -> int:
        """Apply puts (and deletes: value None) inside one ``pager.batch()``.

        Every bucket touched is written once, at the end of the batch. Old locations are freed
        only after the batch has committed: a page freed inside the batch could be handed out
        again by a later allocation of the same batch and overwritten while the committed
        state still refers to it. If the batch fails the pager rolls back, which neither the
        sub-page allocator nor the in-memory buckets see, so both are rebuilt from the file.
        """
        for key, value in ops:
            self._check(key, b"" if value is None else value)
        if not ops:
            return 0
        touched: dict[int, int] = {}  # bucket -> its used bytes after the batch
        stale: list[bytes] = []  # entries whose locations are freed after the commit
        pages: list[mp.PageId] = []
        found = 0
        try:
            with self._pager.batch():
                for key, value in ops:
                    b = self._bucket(key)
                    entries = self._buckets[b]
                    used = touched.get(b, self._used[b])
                    old = entries.pop(key, None)
                    if old is not None:
                        stale.append(old)
                        used -= len(old)
                        found += 1
                    if value is not None:
                        used += _ENTRY.size + len(key)
                        if used > self._room:
                            raise ValueError("bucket full")
                        entries[key], page = self._write_value(key, value)
                        pages.append(page)
                    touched[b] = used
                if self._sync and pages:
                    self._pager.flush(pages)
                for b, used in touched.items():
                    self._commit(b, self._buckets[b], used)
        except BaseException:
            self._reload()
            raise
        for b, used in touched.items():
            self._used[b] = used
        self._count = sum(len(entries) for entries in self._buckets)
        subs = [e for e in stale if e[1] == _SUB]
        self._small.free_bulk([self._sub_id(e) for e in subs])
        self._pager.free_bulk([self._page_id(e) for e in stale if e[1] == _PAGE])
        return found
