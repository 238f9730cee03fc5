"""sequencers: the URL at which each log tree's elected sequencer takes forwarded entries

Revision ID: 3b8e4f1c2d70
Revises: 7c1d2e9a4b60
Create Date: 2026-12-05 08:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '3b8e4f1c2d70'
down_revision: Union[str, Sequence[str], None] = '7c1d2e9a4b60'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('sequencers',
    sa.Column('tree_id', sa.BigInteger(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('since_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tree_id', name=op.f('pk_sequencers'))
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('sequencers')
