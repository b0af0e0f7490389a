"""The outbox claim reads due rows in the order of one index: (status, not_before, kind DESC, id).

The claim orders due rows by time and, within one second, puts other mail before login links
(docs/design.md §12.2). It did so with a CASE expression that no index held, so every claim sorted
all the rows due in the oldest second: during a burst of logins, hundreds per claim, on both
backends. Ordered by `kind DESC` instead ('no_account' and 'new_device' sort after
'login_link'), the claim walks this index and stops at the first row it can take. The new index
begins with the columns of `outbox_due`, which it replaces.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.execute("CREATE INDEX outbox_claim_order ON outbox (status, not_before, kind DESC, id)")
    op.execute("DROP INDEX outbox_due")
