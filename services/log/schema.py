"""SQL tables of the Merkle log engine (SQLAlchemy Core; one schema for SQLite and PostgreSQL).

Every table is keyed by ``tree_id`` so the Rekor log, the CT log and later logs share one
database. ``tiles`` holds the tree as C2SP tiles: row (level L, index N) is the concatenation of up
to 256 hashes of tree level 8·L, positions 256·N… . A tile with 256 hashes is full and never
changes again; the rightmost tile of each level grows in place until it is full.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.db import metadata

__all__ = [
    "checkpoints",
    "entries",
    "search_keys",
    "sequencers",
    "tiles",
    "tree_heads",
    "witness_sizes",
    "witnessed_checkpoints",
]

tree_heads = Table(
    "tree_heads",
    metadata,
    Column("tree_id", BigInteger, nullable=False),
    Column("origin", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("checkpoint", Text, nullable=False),
    PrimaryKeyConstraint("tree_id"),
    CheckConstraint("size >= 0", name="size_nonnegative"),
)

# History of every signed tree head, so an auditor can fetch any checkpoint the log ever issued
# and check consistency between any two.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_id", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("checkpoint", Text, nullable=False),
    PrimaryKeyConstraint("tree_id", "size"),
)

entries = Table(
    "entries",
    metadata,
    Column("tree_id", BigInteger, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("leaf", LargeBinary, nullable=False),
    Column("integrated_time", BigInteger, nullable=False),
    # Data a personality keeps beside the leaf but outside the tree (CT: the chain, extra_data).
    Column("extra", LargeBinary, nullable=True),
    # The personality's signature over the entry as integrated (Rekor: the SET over body,
    # integratedTime, logID and logIndex), made once at commit: a later edit of integrated_time
    # can then no longer be re-signed into a valid-looking reply, and an auditor can check it.
    # NULL for entries committed before it existed (their SETs are still signed on read).
    Column("seal", LargeBinary, nullable=True),
    PrimaryKeyConstraint("tree_id", "idx"),
    # The log's dedup rule: one leaf hash appears at most once per tree.
    UniqueConstraint("tree_id", "leaf_hash"),
)

tiles = Table(
    "tiles",
    metadata,
    Column("tree_id", BigInteger, nullable=False),
    Column("level", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("tree_id", "level", "idx"),
)

search_keys = Table(
    "search_keys",
    metadata,
    Column("tree_id", BigInteger, nullable=False),
    Column("key", String(512), nullable=False),
    Column("idx", BigInteger, nullable=False),
    PrimaryKeyConstraint("tree_id", "key", "idx"),
)


# Per log tree and witness (keyed by the witness's vkey: a new key is a new witness, which starts
# from 0), the size of the latest checkpoint that witness cosigned for this log: the ``old`` of
# the next add-checkpoint request (c2sp.org/tlog-witness).
witness_sizes = Table(
    "witness_sizes",
    metadata,
    Column("tree_id", BigInteger, nullable=False),
    Column("witness", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    PrimaryKeyConstraint("tree_id", "witness"),
)

# Per log tree, the newest checkpoint whose cosignatures satisfy the witness policy's quorum:
# the log's signed note with the cosignature lines appended (c2sp.org/tlog-cosignature).
witnessed_checkpoints = Table(
    "witnessed_checkpoints",
    metadata,
    Column("tree_id", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("checkpoint", Text, nullable=False),
    PrimaryKeyConstraint("tree_id"),
)

# Per log tree, where the process elected to sequence it takes the entries the other processes
# forward (services/log/cluster.py). Only the holder of the tree's leader lock writes its row;
# a stale row (its writer died) only costs a failed connection before the next lookup.
sequencers = Table(
    "sequencers",
    metadata,
    Column("tree_id", BigInteger, nullable=False),
    Column("url", Text, nullable=False),
    Column("since_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("tree_id"),
)
