"""SIGINT and SIGTERM: the same for every command, and unable to change a decided status."""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["in_main_thread", "only_interrupts", "sigterm_as_sigint"]


def in_main_thread() -> bool:
    """Only the main thread may set signal handlers (an in-process caller may be another)."""
    return threading.current_thread() is threading.main_thread()


def sigterm_as_sigint(signum: int, frame: FrameType | None) -> None:
    """SIGTERM does what SIGINT does at that moment, so every command treats them alike."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        # trio's own SIGINT handler (in the demo) accepts nothing but SIGINT.
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


def only_interrupts(error: BaseExceptionGroup[BaseException]) -> bool:
    """A group of nothing but KeyboardInterrupts (how trio may report one)."""
    rest = error.split(KeyboardInterrupt)[1]
    return rest is None
