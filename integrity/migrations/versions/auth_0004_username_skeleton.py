"""auth: the TR39 skeleton of every username, unique (look-alike names are one account)

Revision ID: auth_0004
Revises: auth_0003
"""

import sqlalchemy as sa
from alembic import op

from auth.confusables import skeleton

revision = "auth_0004"
down_revision = "auth_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("username_skeleton", sa.String(256), nullable=True))
    users = sa.table(
        "users",
        sa.column("user_id", sa.String),
        sa.column("username", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("username_skeleton", sa.String),
    )
    conn = op.get_bind()
    seen: set[str] = set()
    # The oldest account keeps a skeleton; a later look-alike keeps working without one.
    for user_id, username in conn.execute(
        sa.select(users.c.user_id, users.c.username).order_by(users.c.created_at, users.c.user_id)
    ):
        mark = skeleton(username)
        if mark in seen:
            continue
        seen.add(mark)
        conn.execute(sa.update(users).where(users.c.user_id == user_id).values(username_skeleton=mark))
    op.create_index("ux_users_username_skeleton", "users", ["username_skeleton"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_users_username_skeleton", "users")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("username_skeleton")
