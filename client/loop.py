"""The private event-loop thread the client's grpc.aio core runs on, for both the sync and the asyncio flavours."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

THREAD_NAME = "rover-safety-client-loop"


class LoopThread:
    """An asyncio event loop on a daemon thread of its own; coroutines are submitted to it from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        """Start the thread and wait until its loop runs."""
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def inside(self) -> bool:
        """Whether the caller runs on the loop's thread."""
        return threading.current_thread() is self._thread

    @property
    def running(self) -> bool:
        """Whether the loop still takes work."""
        return self._thread.is_alive() and not self.loop.is_closed()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coro` on the loop; its future (cancelling the future cancels the coroutine)."""
        if self.inside:
            coro.close()
            raise RuntimeError("a rover-safety client's blocking API was called from its own event-loop thread")
        if not self.running:
            coro.close()
            raise RuntimeError("the client's event loop has stopped")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout: float) -> None:
        """Stop the loop (cancelling what still runs on it) and wait for its thread."""
        if self._thread.is_alive() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if not self.inside:
                self._thread.join(timeout)


def wait(future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """The future's result; an interrupt (Ctrl-C) or error while waiting cancels the call, so a timed move stops."""
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise
