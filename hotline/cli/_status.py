"""What every command ends with: its exit status, or one line of error.

The statuses are one table for every command (docs/cli.md, "Exit status"); the parser's help
repeats it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_SENT = 3
"""``run``: a line read from standard input was not sent (over the size limit, or refused)."""
EXIT_INTERRUPTED = 4
"""SIGINT or SIGTERM came before the command's work was done (``run --until-delivered``: before
every message was delivered). ``run`` without ``--until-delivered`` has no end of its own: a
signal is how it stops, and that is a success."""



class CliError(Exception):
    """An expected failure: its message is the one line the user sees."""
