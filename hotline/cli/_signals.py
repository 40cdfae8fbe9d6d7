"""SIGINT and SIGTERM, from the first instant of the command to its exit status.

The rules (docs/cli.md, "Exit status"): SIGTERM does what SIGINT does, for every command; a
signal is how a plain ``run`` ends (0), and for every other command it means "interrupted
before the work was done" (4); once the status is decided, later signals cannot change it.

Which status a signal means depends on the command, known only once the arguments are parsed,
and parsing them needs modules that take a while to load. So :func:`hotline.cli.main` first
installs :class:`StartupSignals`, which only remembers the signal, then loads the rest, parses,
and acts on a remembered signal before running the command. Nothing is lost and nothing raises
KeyboardInterrupt in the middle of an import, where no handler of ours could catch it.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["StartupSignals", "in_main_thread", "only_interrupts", "sigterm_as_sigint"]

_HANDLED = (signal.SIGINT, signal.SIGTERM)


def in_main_thread() -> bool:
    """Only the main thread may set signal handlers (an in-process caller may be another)."""
    return threading.current_thread() is threading.main_thread()


class StartupSignals:
    """Remembers the first SIGINT or SIGTERM until the command knows what it means.

    A SIGINT that the parent ignores (a background job of a script) stays ignored. Outside the
    main thread (an in-process caller) nothing is installed, as signals cannot be handled there.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.installed = in_main_thread()
        self.previous = {signum: signal.getsignal(signum) for signum in _HANDLED}
        self._sigint = self.previous[signal.SIGINT] is signal.default_int_handler

    @classmethod
    def take_over(cls, interrupted: bool = False) -> StartupSignals:
        """Install the handlers; ``interrupted``: a SIGINT came before they were in place."""
        startup = cls()
        if interrupted:
            startup.signum = signal.SIGINT
        if startup.installed:
            if startup._sigint:
                signal.signal(signal.SIGINT, startup._remember)
            signal.signal(signal.SIGTERM, startup._remember)
        return startup

    def hand_over(self) -> None:
        """Give the signals to the command's own handling: SIGINT raises KeyboardInterrupt
        again, SIGTERM does the same. A signal already remembered is still in
        :attr:`signum`, so the caller checks it after this call, not before."""
        if not self.installed:
            return
        signal.signal(signal.SIGTERM, sigterm_as_sigint)
        if self._sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def restore(self, as_program: bool) -> None:
        """Once the status is decided. As the program, a late signal must not replace it
        (with 130 or 143) while the interpreter shuts down, so both are then ignored."""
        for signum, action in self.previous.items() if self.installed else ():
            signal.signal(signum, signal.SIG_IGN if as_program else action)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum


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
