"""users.email

Revision ID: c3
Revises: b2
"""
import sqlalchemy as sa
from alembic import op

revision = "c3"
down_revision = "b2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email", sa.String(120)))


def downgrade() -> None:
    op.drop_column("users", "email")
