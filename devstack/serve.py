"""``make serve``: the local stack stays up and the API listens on 127.0.0.1:<port>.

It behaves like the deployed API: a Cognito Id token is required on every method, the
request model and the required ``Idempotency-Key`` header are checked before the function
runs, and orders flow through the queue and the saga in the background.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from devstack.stack import LocalStack

EXAMPLE_ORDER = Path("docs/examples/order.json")


def main(*, port: int = 8080) -> int:
    def say(message: str) -> None:
        print(f"serve: {message}", file=sys.stderr, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalStack(say=say, api_port=port) as stack:
        token = stack.customer_token("demo@example.com")
        url = stack.api_url
        print(
            f"""
The local API is up at {url}

Demo customer Id token (valid 1 hour; send it as the Authorization header):
export TOKEN='{token}'

Place an order (retrying with the same Idempotency-Key returns the same order):
curl -s -X POST {url}/orders -H "Authorization: $TOKEN" -H 'Idempotency-Key: my-first-order-1' \\
     -H 'Content-Type: application/json' -d @{EXAMPLE_ORDER}

Read it back (use the order_id from the answer):
curl -s {url}/orders/ORDER_ID -H "Authorization: $TOKEN"

Without a token the gateway answers 401, without Idempotency-Key 400. Ctrl-C stops everything.
""",
            flush=True,
        )
        try:
            while not stop.wait(1):
                pass
        except KeyboardInterrupt:
            pass
    return 0
