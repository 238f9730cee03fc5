"""witness cosignatures: each witness's cosigned size and the witnessed checkpoint per tree

Revision ID: 7c1d2e9a4b60
Revises: 5655677e4f67
Create Date: 2026-12-04 04:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '7c1d2e9a4b60'
down_revision: Union[str, Sequence[str], None] = '5655677e4f67'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('witness_sizes',
    sa.Column('tree_id', sa.BigInteger(), nullable=False),
    sa.Column('witness', sa.Text(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tree_id', 'witness', name=op.f('pk_witness_sizes'))
    )
    op.create_table('witnessed_checkpoints',
    sa.Column('tree_id', sa.BigInteger(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('checkpoint', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('tree_id', name=op.f('pk_witnessed_checkpoints'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('witnessed_checkpoints')
    op.drop_table('witness_sizes')
