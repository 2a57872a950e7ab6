"""The provider Idempotency-Keys of an order's charge and refund (F09): derived from the order,
so every attempt of a step, in any environment, sends the same key."""


def charge_key(order_id: str) -> str:
    return f"{order_id}:charge"


def refund_key(order_id: str) -> str:
    return f"{order_id}:refund"
