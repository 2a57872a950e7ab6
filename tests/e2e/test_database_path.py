"""The local database path is AWS's shape (issue 10, ADR 0008): the service functions reach
PostgreSQL through the pooling proxy as the application role, Migrate reaches the instance
directly as the master login, and every connection is TLS verified against the run's CA."""

from __future__ import annotations

from tests.catalogue.full_stack import function_connections
from tests.localstack import Running, new_key


def test_functions_connect_as_deployed_only_host_bundle_and_login_differ(running: Running) -> None:
    """Fails if: devstack.aws.local_overrides points a service function at PostgreSQL
    directly (around the proxy), turns TLS verification off, or logs it in as the master
    login instead of the application role whose grants the migrations define."""
    stack = running.stack
    resources, proxy, postgres = stack.resources, stack.proxy, stack.postgres
    assert resources is not None
    assert proxy is not None
    assert postgres is not None
    template_env = {fn.logical_id: fn.environment for fn in stack.template.functions()}
    checked = {}
    for logical_id, fn in resources.functions.items():
        env = fn.config.environment
        if "DB_HOST" not in env:
            continue
        direct = "Migrate" in logical_id
        target = postgres if direct else proxy.settings
        assert (env["DB_HOST"], env["DB_PORT"]) == (target.host, str(target.port)), logical_id
        assert env["DB_SSLMODE"] == template_env[logical_id]["DB_SSLMODE"] == "verify-full"
        assert env["DB_SSLROOTCERT"] == postgres.sslrootcert
        checked[logical_id] = direct
    assert sorted(checked.values()) == [False] * (len(checked) - 1) + [True]


def test_an_order_travels_through_the_proxy_over_tls_as_the_app_role(running: Running) -> None:
    """Fails if: the functions' connections bypass the proxy or its TLS (a function that did not
    verify its server would pass locally and fail against RDS Proxy's require_tls)."""
    stack = running.stack
    proxy = stack.proxy
    assert proxy is not None
    status, body = running.api.post_order(
        running.alice,
        {
            "items": [{"sku": "SKU-APPLE", "quantity": 1}],
            "payment_method": "pm_card_visa",
            "currency": "EUR",
        },
        new_key(),
    )
    assert status == 202, body
    assert running.api.wait_terminal(running.alice, body["order_id"])["status"] == "CONFIRMED"

    clients = function_connections(stack)
    with stack.db() as conn:
        app_sessions = conn.execute(
            "SELECT count(*), bool_and(ssl) FROM pg_stat_activity JOIN pg_stat_ssl USING (pid)"
            " WHERE usename = 'orders_app'"
        ).fetchone()

    assert clients, "no function connection at the proxy"
    assert {c["user"] for c in clients} == {"orders_app"}
    assert all(str(c["tls"]).startswith("TLSv1.") for c in clients), clients
    assert app_sessions is not None
    count, all_tls = app_sessions
    assert 0 < count <= proxy.pool_size  # only the proxy's pooled server connections
    assert all_tls is True
