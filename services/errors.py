"""The base of every error an operator can fix: a bad flag, file, key, database or data directory.

The command line catches ``OperatorError`` in one place (``services.cli.main``) and prints its
message as one line, without a traceback (``-v`` adds it): the message must say what is wrong
and, where it is not obvious, what to do. Modules raise their own subclasses (``ConfigError``,
``CAKeyError``, ``KeyFileError`` ...), so callers inside the package can still tell them apart.

This module imports nothing, so the command line can name the class without loading the
libraries behind the commands.
"""

from __future__ import annotations

__all__ = ["OperatorError"]


class OperatorError(Exception):
    """Something the operator gave or set up is unusable; ``str(err)`` says what and how to fix."""

    # What the message is about, when the message alone does not say ("sigstead: LABEL: …").
    label: str | None = None
