"""Running pyHanko's coroutines (signing, validation, certificate paths) from synchronous code.

pyHanko and pyhanko-certvalidator are asynchronous libraries; the signing services call them
from worker threads and from the CLI. Each thread keeps one event loop for them instead of
building and tearing one down per call (``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
_LOOPS = threading.local()
# Every loop made by ``run_sync``, and, across a fork, strong references to them. A forked child
# (signing.pdf_sandbox) shares each inherited loop's epoll instance with the parent: were the
# child to close one (a garbage collection finalising an unreferenced loop does), it would
# unregister the parent's wake-up pipe from that epoll, and the parent's loop would never wake
# again for work finished on another thread (a TSA request then hangs for ever). So the child
# keeps them all referenced until it leaves with os._exit, and starts its own loop.
_ALL_LOOPS: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_PINNED: list[asyncio.AbstractEventLoop] = []


def _pin_loops() -> None:
    _PINNED[:] = list(_ALL_LOOPS)


def _unpin_loops() -> None:
    _PINNED.clear()


def _forget_loop() -> None:
    # Runs in the forking thread of the child; the inherited loop stays pinned, never closed.
    _LOOPS.__dict__.clear()


os.register_at_fork(before=_pin_loops, after_in_parent=_unpin_loops, after_in_child=_forget_loop)


def run_sync(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run one of pyHanko's coroutines on this thread's own event loop.

    Not ``asyncio.run``: in the main thread it installs a SIGINT handler whose teardown reprs
    the finished task, result included (asn1crypto objects dump themselves for that), and it
    builds and tears down a loop per call. Call from synchronous code only.
    """
    loop = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _LOOPS.loop = loop
        _ALL_LOOPS.add(loop)
    return loop.run_until_complete(coroutine)
