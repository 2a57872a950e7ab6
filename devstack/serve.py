"""``make serve``: the local stack stays up and the API listens on 127.0.0.1:<port>.

It behaves like the deployed API: a Cognito Id token is required on every method, the
request model and the required ``Idempotency-Key`` header are checked before the function
runs, and orders flow through the queue and the saga in the background.

While it runs, the stack's resource map (``devstack/resource_map.py``) lets ``orders-ops``
work without flags and ``python -m devstack token <email>`` mint a fresh Id token (they
expire after an hour) for any customer of the local pool.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import boto3
import jwt
from orders_saga.logic.order_identity import order_id_for

from devstack import resource_map
from devstack.stack import LocalStack
from ops.local_map import LocalStackMap, find

PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
EXAMPLE_ORDER: Final = PROJECT_ROOT / "docs" / "examples" / "order.json"
# Two customers, so "another customer's order is 404" can be tried at once.
CUSTOMERS: Final = {"ALICE": "alice@example.com", "BOB": "bob@example.com"}
EXAMPLE_KEY: Final = "alice-order-0001"
# The stack's CloudFormation output keys (infra/stack.py) the token needs.
USER_POOL_OUTPUT: Final = "UserPoolId"
USER_POOL_CLIENT_OUTPUT: Final = "UserPoolClientId"


class NoLocalStack(RuntimeError):
    """No running local stack to talk to (no map, or a stale one)."""


def token_expiry(token: str) -> datetime:
    """When an Id token stops being accepted (its ``exp`` claim; read, not verified)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return datetime.fromtimestamp(int(claims["exp"]), tz=UTC)


def customer_id(token: str) -> str:
    """The customer an Id token speaks for (its ``sub``, what orders are keyed on)."""
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def mint_token(local: LocalStackMap, username: str) -> str:
    """A fresh Id token for ``username`` in the running stack's user pool.

    The user is created on first use; an existing one keeps its identity (``sub``), so a new
    token still sees that customer's orders. The local pool's users are the local stack's own:
    a new password is set for each token (ADMIN_USER_PASSWORD_AUTH, as the stack's demo users).
    """
    pool_id = local.outputs.get(USER_POOL_OUTPUT)
    client_id = local.outputs.get(USER_POOL_CLIENT_OUTPUT)
    if pool_id is None or client_id is None:
        raise NoLocalStack(
            f"the local stack {local.stack_name} has no Cognito user pool and client"
        )
    idp: Any = boto3.client(
        "cognito-idp",
        endpoint_url=local.endpoint_for("cognito-idp"),
        region_name=local.region,
        aws_access_key_id=local.access_key_id,
        aws_secret_access_key=local.secret_access_key,
    )
    attributes = [{"Name": "email_verified", "Value": "true"}]
    if "@" in username:
        attributes.append({"Name": "email", "Value": username})
    with contextlib.suppress(idp.exceptions.UsernameExistsException):
        idp.admin_create_user(
            UserPoolId=pool_id,
            Username=username,
            MessageAction="SUPPRESS",
            UserAttributes=attributes,
        )
    password = f"Aa1!{secrets.token_urlsafe(16)}"
    idp.admin_set_user_password(
        UserPoolId=pool_id, Username=username, Password=password, Permanent=True
    )
    auth = idp.admin_initiate_auth(
        UserPoolId=pool_id,
        ClientId=client_id,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )
    return str(auth["AuthenticationResult"]["IdToken"])


def token_main(username: str, *, map_path: Path = resource_map.DEFAULT_PATH) -> int:
    """``python -m devstack token <username>``: the token on stdout, the rest on stderr."""
    lookup = find(map_path)
    if lookup.local is None:
        reason = lookup.note or f"no local stack map at {map_path}: start `make serve` first"
        print(f"token: {reason}", file=sys.stderr)
        return 1
    token = mint_token(lookup.local, username)
    expires = token_expiry(token).strftime("%H:%M:%S UTC")
    print(f"token: {username} on {lookup.local.api_url}, valid until {expires}", file=sys.stderr)
    print(token)
    return 0


def instructions(
    url: str, tokens: dict[str, str], *, map_path: Path, python: str = ".venv/bin/python"
) -> str:
    """What ``make serve`` prints: two customers' tokens and commands to paste."""
    expires = min(token_expiry(t) for t in tokens.values()).strftime("%H:%M UTC")
    order_id = order_id_for(customer_id(tokens["ALICE"]), EXAMPLE_KEY)
    exports = "\n".join(f"export {name}='{token}'" for name, token in tokens.items())
    example = shlex.quote(str(EXAMPLE_ORDER))
    mint = f"{python} -m devstack token {CUSTOMERS['ALICE']}"
    return f"""
The local API is up at {url}

Two customers' Cognito Id tokens (the Authorization header):
{exports}

They expire at {expires} (1 hour). A fresh one, for these or any other customer, while this runs:
export ALICE=$({mint})

Alice places an order (202; the same Idempotency-Key again returns the same order):
curl -s -X POST {url}/orders -H "Authorization: $ALICE" -H 'Idempotency-Key: {EXAMPLE_KEY}' \\
     -H 'Content-Type: application/json' -d @{example}

Its order_id is derived from Alice's identity and the key, so it is known already:
export ORDER_ID={order_id}

Alice reads it (200, with its status); Bob gets 404, as for an order that does not exist:
curl -s {url}/orders/$ORDER_ID -H "Authorization: $ALICE"
curl -s -w ' %{{http_code}}\\n' {url}/orders/$ORDER_ID -H "Authorization: $BOB"

orders-ops finds this stack by itself (resource map {map_path}), no flags:
.venv/bin/orders-ops saga show $ORDER_ID
.venv/bin/orders-ops intake status
.venv/bin/orders-ops dlq inspect orders-dlq

Without a token the gateway answers 401, without Idempotency-Key 400. Ctrl-C stops everything.
"""


def main(*, port: int = 8080, map_path: Path = resource_map.DEFAULT_PATH) -> int:
    def say(message: str) -> None:
        print(f"serve: {message}", file=sys.stderr, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with (
        LocalStack(say=say, api_port=port) as stack,
        resource_map.published(map_path, stack.resource_map(), say),
    ):
        tokens = {name: stack.customer_token(email) for name, email in CUSTOMERS.items()}
        print(instructions(stack.api_url, tokens, map_path=map_path), flush=True)
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass
    return 0
