"""``orders-ops saga show`` reads PostgreSQL the way RDS Proxy allows (issue 10, finding 3)."""

from __future__ import annotations

import uuid

from devstack.pgbouncer import LocalPgBouncer
from devstack.postgres import PostgresSettings
from ops.orders_db import load_order


def test_the_operator_read_goes_through_the_pooling_proxy(
    migrated_postgres: PostgresSettings, local_proxy: LocalPgBouncer
) -> None:
    """Fails if: load_order sends startup `options` again (the proxy refuses the connection:
    "unsupported startup parameter: options")."""
    dsn = local_proxy.conninfo(migrated_postgres.user, migrated_postgres.password)

    assert load_order(dsn, str(uuid.uuid4())) is None
