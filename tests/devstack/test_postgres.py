"""The throwaway PostgreSQL is real: password auth over loopback TCP, TLS only (like
``rds.force_ssl=1``) and verified against the run's CA, constraints enforced, and nothing left
behind; binary discovery is predictable and fails with a useful message."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import psycopg
import pytest

from devstack import postgres
from devstack.postgres import (
    LocalPostgres,
    PostgresNotFound,
    PostgresSettings,
    find_postgres_binaries,
)

# --------------------------------------------------------------------------- the server


def test_accepts_password_connection_over_loopback_tcp(
    postgres_settings: PostgresSettings,
) -> None:
    with psycopg.connect(postgres_settings.conninfo()) as conn:
        row = conn.execute(
            "SELECT host(inet_server_addr()), current_database(), current_user"
        ).fetchone()
        listen = conn.execute("SHOW listen_addresses").fetchone()

    assert row == ("127.0.0.1", "orders", postgres_settings.user)
    assert listen == ("127.0.0.1",)


def test_accepts_only_tls_verified_against_the_runs_ca(
    postgres_settings: PostgresSettings,
) -> None:
    """Like an RDS instance with rds.force_ssl=1: a plain connection is refused, and the
    server's certificate verifies (verify-full: chain and host name) only against the run's CA.

    Fails if: TLS is switched off or optional in devstack/postgres.py (a function that forgot
    its CA bundle would pass locally and fail in AWS: catalogue F16)."""
    with psycopg.connect(postgres_settings.conninfo()) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)

    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
        psycopg.connect(postgres_settings.conninfo(sslmode="disable"))
    # Any other bundle (here Debian's system store) does not vouch for the server.
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(
            postgres_settings.conninfo(sslrootcert="/etc/ssl/certs/ca-certificates.crt")
        )


def test_rejects_wrong_password(postgres_settings: PostgresSettings) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_settings.conninfo(password="not-the-password"))


def test_uses_scram_and_throwaway_durability_settings(
    postgres_settings: PostgresSettings,
) -> None:
    names = ("password_encryption", "fsync", "synchronous_commit", "full_page_writes")

    with psycopg.connect(postgres_settings.conninfo()) as conn:
        values = [conn.execute(f"SHOW {name}").fetchone() for name in names]

    assert values == [("scram-sha-256",), ("off",), ("off",), ("off",)]


def test_check_constraint_rejects_invalid_row(postgres_settings: PostgresSettings) -> None:
    with psycopg.connect(postgres_settings.conninfo()) as conn:
        conn.execute(
            "CREATE TEMP TABLE stock (sku text PRIMARY KEY, on_hand int NOT NULL"
            " CHECK (on_hand >= 0))"
        )
        conn.execute("INSERT INTO stock VALUES ('sku-1', 1)")

        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE stock SET on_hand = on_hand - 2 WHERE sku = 'sku-1'")


def test_stop_shuts_down_and_removes_everything(local_postgres: LocalPostgres) -> None:
    # Given its own server (the session one stays up), with a non-default connection budget
    pg = LocalPostgres(max_connections=20)
    settings = pg.start()
    root = pg.root_dir
    assert root is not None
    assert root.is_dir()
    with psycopg.connect(settings.conninfo()) as conn:
        assert conn.execute("SHOW max_connections").fetchone() == ("20",)
    assert 0 < pg.startup_seconds < 30

    # When
    pg.stop()
    pg.stop()  # idempotent: __exit__ and atexit may both call it

    # Then
    assert not root.exists()
    assert pg.root_dir is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(settings.conninfo(connect_timeout=2))


def test_settings_helpers_match_the_contract() -> None:
    settings = PostgresSettings("127.0.0.1", 5555, "orders", "app", "s3cret", "/tmp/ca.pem")

    assert "password=s3cret" in settings.conninfo()
    assert "sslmode=verify-full sslrootcert=/tmp/ca.pem" in settings.conninfo()
    assert "s3cret" not in repr(settings)
    assert settings.env() == {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": "5555",
        "DB_NAME": "orders",
        "DB_USER": "app",
        "DB_SSLMODE": "verify-full",
        "DB_SSLROOTCERT": "/tmp/ca.pem",
    }
    assert json.loads(settings.secret_string()) == {"username": "app", "password": "s3cret"}


# --------------------------------------------------------------------------- discovery


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def fake_bindir(path: Path, version: str) -> Path:
    """A directory that looks like PostgreSQL server binaries of ``version``."""
    _script(path / "initdb", f'echo "initdb (PostgreSQL) {version}"')
    _script(path / "pg_ctl", f'echo "pg_ctl (PostgreSQL) {version}"')
    return path


def fake_pg_config(directory: Path, bindir: Path) -> None:
    _script(directory / "pg_config", f'echo "{bindir}"')


@pytest.fixture
def no_real_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hide the machine's PostgreSQL: an empty PATH entry and an empty Debian root."""
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    monkeypatch.setenv("PATH", str(path_dir))
    monkeypatch.setattr(postgres, "DEBIAN_PG_ROOT", tmp_path / "usr-lib-postgresql")
    return path_dir


def test_discovery_prefers_pg_config(no_real_postgres: Path, tmp_path: Path) -> None:
    preferred = fake_bindir(tmp_path / "pgconfig-bin", "16.2")
    fake_pg_config(no_real_postgres, preferred)
    fake_bindir(no_real_postgres, "17.0")  # also on PATH, but pg_config comes first

    found = find_postgres_binaries()

    assert (found.bindir, found.major) == (preferred, 16)


def test_discovery_skips_pg_config_dir_without_server(
    no_real_postgres: Path, tmp_path: Path
) -> None:
    # libpq-dev's pg_config names a bindir without initdb/pg_ctl
    fake_pg_config(no_real_postgres, tmp_path / "client-only")
    fake_bindir(no_real_postgres, "15.4")

    found = find_postgres_binaries()

    assert (found.bindir, found.major) == (no_real_postgres, 15)


def test_discovery_falls_back_to_highest_debian_version(no_real_postgres: Path) -> None:
    root = postgres.DEBIAN_PG_ROOT
    fake_bindir(root / "14" / "bin", "14.9")
    fake_bindir(root / "16" / "bin", "16.1")
    fake_bindir(root / "9" / "bin", "9.6")

    found = find_postgres_binaries()

    assert found.bindir == root / "16" / "bin"


def test_discovery_skips_too_old_versions(no_real_postgres: Path) -> None:
    fake_bindir(no_real_postgres, "13.11")
    fake_bindir(postgres.DEBIAN_PG_ROOT / "14" / "bin", "14.9")

    assert find_postgres_binaries().major == 14


def test_discovery_error_names_the_package(no_real_postgres: Path) -> None:
    fake_bindir(no_real_postgres, "12.3")

    with pytest.raises(PostgresNotFound) as info:
        find_postgres_binaries()

    message = str(info.value)
    assert "apt-get install postgresql" in message
    assert ">= 14" in message
    assert "12.3" in message  # the too-old server is named, so the fix is obvious


def test_start_without_binaries_raises_before_touching_disk(
    no_real_postgres: Path,
) -> None:
    pg = LocalPostgres()

    with pytest.raises(PostgresNotFound):
        pg.start()

    assert pg.root_dir is None


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path only applies to root")
def test_as_root_the_server_runs_as_the_postgres_user(
    postgres_settings: PostgresSettings,
) -> None:
    with psycopg.connect(postgres_settings.conninfo()) as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()

    assert data_dir is not None
    assert Path(data_dir[0]).owner() == "postgres"
