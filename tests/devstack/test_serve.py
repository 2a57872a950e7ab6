"""``make serve`` is easy to drive (issue 13): it publishes a resource map for ``orders-ops``
and removes it, prints two customers' tokens with commands to paste, and mints fresh tokens
while it runs (``python -m devstack token``)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import psycopg
import pytest
from orders_saga.logic.order_identity import order_id_for

from devstack import resource_map
from devstack.cli import main as devstack_main
from devstack.serve import CUSTOMERS, EXAMPLE_KEY, EXAMPLE_ORDER, instructions, mint_token
from ops.local_map import DEFAULT_ENDPOINT, LocalStackMap, find
from tests.localstack import Running, new_key

ORDER = {
    "items": [{"sku": "SKU-APPLE", "quantity": 1}],
    "payment_method": "pm_card_visa",
    "currency": "EUR",
}


def a_map(pid: int | None = None) -> LocalStackMap:
    return LocalStackMap(
        pid=os.getpid() if pid is None else pid,
        started_at="2026-01-01T00:00:00+00:00",
        stack_name="StackUnderTest",
        region="eu-west-1",
        endpoints={DEFAULT_ENDPOINT: "http://127.0.0.1:1"},
        access_key_id="testing",
        secret_access_key="testing",
        outputs={"OrdersDlqUrl": "http://127.0.0.1:1/123456789012/dlq"},
        api_url="http://127.0.0.1:2/dev",
        db_dsn="host=127.0.0.1 password=secret",
    )


def ended_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


# -- the resource map's life -----------------------------------------------------------------


def test_the_map_is_private_while_serve_runs_and_gone_when_it_stops(tmp_path: Path) -> None:
    """Fails if: the map (it holds the database password) is readable by others, is left
    behind by a clean stop, or does not read back as what was written."""
    path = tmp_path / ".devstack" / "resources.json"
    said: list[str] = []

    with resource_map.published(path, a_map(), said.append):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert find(path).local == a_map()
        assert [p.name for p in path.parent.iterdir()] == ["resources.json"]  # no temp file

    assert not path.exists()
    assert said == [f"resource map for orders-ops written to {path}"]


def test_the_map_is_removed_when_serve_fails(tmp_path: Path) -> None:
    path = tmp_path / "resources.json"

    with pytest.raises(RuntimeError), resource_map.published(path, a_map(), print):
        raise RuntimeError("the stack died")

    assert not path.exists()


def test_a_stale_map_is_replaced_and_a_live_one_of_another_stack_is_not_removed(
    tmp_path: Path,
) -> None:
    """Fails if: a killed stack's map blocks the next `make serve`, or one stack deletes the
    map another running stack has since written."""
    path = tmp_path / "resources.json"
    stale = ended_pid()
    resource_map.write(path, a_map(pid=stale))
    said: list[str] = []

    with resource_map.published(path, a_map(), said.append):
        assert f"replacing the stale resource map of process {stale}" in said[0]
        assert find(path).local == a_map()

    resource_map.write(path, a_map(pid=os.getppid()))  # another live process wrote it since
    assert resource_map.remove(path, os.getpid()) is False
    assert path.exists()


# -- what serve prints -----------------------------------------------------------------------


def test_serve_prints_two_customers_and_how_the_other_one_gets_404() -> None:
    """Fails if: the printed commands lose a customer, the mint command, or the order id the
    POST will answer (derived from Alice's identity and the printed key)."""
    expires = int(time.time()) + 3600
    tokens = {
        name: jwt.encode({"sub": f"sub-{name}", "exp": expires}, "k" * 32, algorithm="HS256")
        for name in CUSTOMERS
    }

    text = instructions("http://127.0.0.1:8080/dev", tokens, map_path=Path("/m.json"))

    assert f"export ALICE='{tokens['ALICE']}'" in text
    assert f"export BOB='{tokens['BOB']}'" in text
    assert f"export ORDER_ID={order_id_for('sub-ALICE', EXAMPLE_KEY)}" in text
    assert f"-H 'Idempotency-Key: {EXAMPLE_KEY}'" in text
    assert f"-d @{EXAMPLE_ORDER}" in text
    assert EXAMPLE_ORDER.is_file()
    assert '/orders/$ORDER_ID -H "Authorization: $BOB"' in text
    assert "export ALICE=$(.venv/bin/python -m devstack token alice@example.com)" in text
    assert "(1 hour)" in text
    assert ".venv/bin/orders-ops intake status" in text


# -- against the session's local stack -------------------------------------------------------


def test_the_running_stack_map_names_what_orders_ops_needs(running: Running) -> None:
    """Fails if: the map misses an endpoint (DynamoDB has its own), an output orders-ops
    reads, or a DSN that reaches the orders database."""
    stack, resources = running.stack, running.stack.resources
    assert resources is not None
    assert stack.aws is not None

    local = stack.resource_map()

    assert local.pid == os.getpid()
    assert local.stack_name == stack.template.stack_name
    assert local.endpoint_for("sqs") == resources.endpoint_url
    assert local.endpoint_for("dynamodb") == stack.aws.endpoint_for("dynamodb")
    assert local.endpoint_for("dynamodb") != resources.endpoint_url
    assert {
        key: local.outputs.get(key)
        for key in (
            "OrdersDlqUrl",
            "NeedsAttentionQueueUrl",
            "StateMachineArn",
            "IntakeFunctionName",
            "IdempotencyTableName",
            "UserPoolId",
            "UserPoolClientId",
            "ApiUrl",
        )
    } == {
        "OrdersDlqUrl": resources.orders_dlq_url,
        "NeedsAttentionQueueUrl": resources.needs_attention_queue_url,
        "StateMachineArn": resources.state_machine_arn,
        "IntakeFunctionName": resources.function("intake").name,
        "IdempotencyTableName": resources.idempotency_table,
        "UserPoolId": resources.user_pool_id,
        "UserPoolClientId": resources.user_pool_client_id,
        "ApiUrl": f"{stack.api_url}/",
    }
    assert local.db_dsn is not None
    with psycopg.connect(local.db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM inventory").fetchone() != (0,)


def test_a_minted_token_is_accepted_and_another_customers_order_stays_404(
    running: Running,
) -> None:
    """Fails if: a fresh token for an existing customer gets a new identity (her orders would
    vanish), a new customer cannot get one, or a customer can read another's order."""
    local = running.stack.resource_map()
    # Given an order of Alice's
    status, accepted = running.api.post_order(running.alice, ORDER, new_key())
    assert status == 202, accepted
    order_id = accepted["order_id"]

    # When tokens are minted as `python -m devstack token` does
    alice = mint_token(local, "alice@example.com")
    carol = mint_token(local, f"carol-{new_key()}@example.com")

    # Then Alice's fresh token is still Alice; Bob and a new customer get 404
    assert alice != running.alice
    assert Running.customer_id(alice) == Running.customer_id(running.alice)
    assert running.api.get_order(alice, order_id)[0] == 200
    assert running.api.get_order(running.bob, order_id) == (
        404,
        {"message": "Order not found", "reason": ""},
    )
    assert running.api.get_order(carol, order_id)[0] == 404
    status, carols = running.api.post_order(carol, ORDER, new_key())
    assert status == 202, carols
    assert running.api.get_order(carol, carols["order_id"])[0] == 200


def test_the_token_command_prints_only_the_token_and_says_when_it_expires(
    running: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "resources.json"
    with resource_map.published(path, running.stack.resource_map(), print):
        capsys.readouterr()

        code = devstack_main(["token", "bob@example.com", "--map", str(path)])

    printed = capsys.readouterr()
    assert code == 0
    token = printed.out.strip()
    assert Running.customer_id(token) == Running.customer_id(running.bob)
    assert "bob@example.com" in printed.err
    assert "valid until" in printed.err


def test_the_token_command_without_a_running_stack_says_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = devstack_main(["token", "bob@example.com", "--map", str(tmp_path / "none.json")])

    assert code == 1
    assert "start `make serve` first" in capsys.readouterr().err
