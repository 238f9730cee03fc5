"""entry seal: the Rekor SET stored at integration

Revision ID: 5655677e4f67
Revises: dbf2e53a83db
Create Date: 2026-12-04 01:50:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '5655677e4f67'
down_revision: Union[str, Sequence[str], None] = 'dbf2e53a83db'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Nullable: entries committed before this revision keep having their SET signed on read.
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seal', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('entries', schema=None) as batch_op:
        batch_op.drop_column('seal')
