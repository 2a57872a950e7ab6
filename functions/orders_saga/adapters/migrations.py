"""Versioned SQL migrations, applied on deploy (the Migrate trigger) and by the local run.

Files are ``migrations/NNNN_name.sql``, applied in order in one transaction (all or nothing), under
an advisory lock so two concurrent deploys cannot interleave.
"""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql

_LOCK_ID = 0x0D5A6A  # arbitrary, constant: the advisory lock key for migrations


def available_migrations() -> list[tuple[str, str]]:
    folder = resources.files("orders_saga") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


def apply_migrations(conn: psycopg.Connection) -> list[str]:
    """Apply pending migrations; returns the versions applied now. ``conn`` is autocommit-off."""
    applied_now: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, sql in available_migrations():
            if version in done:
                continue
            with conn.transaction():  # a savepoint: one failing file leaves the rest untouched
                conn.execute(sql.encode())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied_now.append(version)
    return applied_now


def configure_app_role(conn: psycopg.Connection, role: str, *, statement_timeout_ms: int) -> None:
    """F07: the statement bound of every session the functions open, set on their role.

    Through RDS Proxy a client cannot send it (the proxy refuses startup ``options``) and a
    session-level ``SET`` would pin the connection, so it lives on the role: PostgreSQL applies
    it to every new server connection the proxy opens for the role. Run on every deploy, so the
    value follows the stage configuration (``DB_STATEMENT_TIMEOUT_MS``).
    """
    if statement_timeout_ms < 1:
        raise ValueError("statement_timeout_ms must be >= 1 (0 would disable the bound)")
    with conn.transaction():
        conn.execute(
            sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
                sql.Identifier(role), sql.Literal(f"{statement_timeout_ms}ms")
            )
        )
