"""posts.title NOT NULL: a batch_alter_table rebuild (SQLite cannot ALTER a column)

Revision ID: d4
Revises: c3
"""
import sqlalchemy as sa
from alembic import op

revision = "d4"
down_revision = "c3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE posts SET title = '(untitled)' WHERE title IS NULL")
    with op.batch_alter_table("posts") as batch:
        batch.alter_column("title", existing_type=sa.String(200), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("posts") as batch:
        batch.alter_column("title", existing_type=sa.String(200), nullable=True)
