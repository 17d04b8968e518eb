"""A lock that says when another thread is waiting for it.

Why: tests hold a store's lock to stand for a long transaction (a WAL checkpoint, say) and
then check what the loop sees meanwhile. Sleeping a while and hoping the writer thread got
there proves nothing; `waiting` is set once the writer is at the lock, so the test knows
the thread has taken its work and is blocked before any of it can commit.
"""

from __future__ import annotations

import threading
from types import TracebackType


class WatchedLock:
    """`threading.Lock`'s surface (`acquire`, `release`, `with`), plus `waiting`: set when
    a thread found it held and is about to block on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        self.waiting.set()
        return blocking and self._lock.acquire(True, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
