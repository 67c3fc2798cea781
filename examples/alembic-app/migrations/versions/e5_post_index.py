"""index on posts.user_id

Revision ID: e5
Revises: d4
"""
from alembic import op

revision = "e5"
down_revision = "d4"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_posts_user_id", "posts", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_posts_user_id", "posts")
