"""A small readers-writer lock: many readers or one writer, writers first.

Writer preference: once a writer waits, new readers wait too, so a steady stream of readers
cannot starve writers. Not reentrant: a thread that holds the lock and asks for it again in a
conflicting mode would wait for itself; the cases that can be detected raise RuntimeError.
"""

from __future__ import annotations

import threading

__all__ = ["RWLock"]


class RWLock:
    __slots__ = ("_cond", "_readers", "_waiting_writers", "_writer")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers: dict[int, int] = {}  # thread id -> read holds
        self._writer = 0  # thread id of the writer, 0 when none
        self._waiting_writers = 0

    def acquire_read(self, blocking: bool = True) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                if not blocking:
                    return False
                raise RuntimeError("this thread holds the write lock: waiting would deadlock")
            while self._writer or (self._waiting_writers and me not in self._readers):
                if not blocking:
                    return False
                self._cond.wait()
            self._readers[me] = self._readers.get(me, 0) + 1
            return True

    def release_read(self) -> None:
        me = threading.get_ident()
        with self._cond:
            holds = self._readers.get(me, 0)
            if not holds:
                raise RuntimeError("this thread does not hold the read lock")
            if holds == 1:
                del self._readers[me]
                if not self._readers:
                    self._cond.notify_all()
            else:
                self._readers[me] = holds - 1

    def acquire_write(self, blocking: bool = True) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me or me in self._readers:
                if not blocking:
                    return False
                raise RuntimeError("this thread holds the lock already: waiting would deadlock")
            if not blocking:
                if self._writer or self._readers:
                    return False
                self._writer = me
                return True
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = me
            return True

    def release_write(self) -> None:
        with self._cond:
            if self._writer != threading.get_ident():
                raise RuntimeError("this thread does not hold the write lock")
            self._writer = 0
            self._cond.notify_all()

    def __repr__(self) -> str:
        with self._cond:
            state = f"writer={bool(self._writer)} readers={sum(self._readers.values())}"
        return f"<RWLock {state} waiting_writers={self._waiting_writers}>"
