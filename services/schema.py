"""Every table sigstead stores, registered on one MetaData (what alembic compares against)."""

from __future__ import annotations

import services.log.schema  # noqa: F401 -- registers the log tables
from services.db import metadata

__all__ = ["metadata"]
