"""What the ``popcon`` commands print: standard output that survives a reader gone early."""

from __future__ import annotations

import os
import sys


def write_stdout(text: str) -> None:
    """Write and flush; a reader gone early (``popcon status | head``) is no error."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
