"""The base of the ``clients`` package's error hierarchy.

Everything a client-side check rejects is a ``ClientError``, so the CLI can catch one class, print
the message and exit non-zero. Subclasses are named for what went wrong, not where.
"""

from __future__ import annotations

__all__ = ["ClientError"]


class ClientError(Exception):
    """Something a client was given, fetched or asked to check is not acceptable."""

    # How the command line labels the message ("sigstead: LABEL: message"); none by default.
    label: str | None = None
