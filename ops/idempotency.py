"""Read an order's idempotency records by their exact keys (no table scan).

Two layers keep Powertools records (ADR 0012): the Api's ``place_order`` and the Intake's
``start_saga``; the saga steps keep none, their side effects are idempotent underneath (the
order-row lock, the provider Idempotency-Key). Only ``start_saga`` is keyed on the order id
(``orders_saga/logic/intake.py``): Powertools stores ``<key_prefix>#<md5 of the JSON-encoded
key value>``, and the key value is the order id string. ``place_order`` is keyed on
(customer, Idempotency-Key header), which the order id cannot give back, so it is not listed.
``tests/ops/test_idempotency_keys.py`` checks the prefixes and the hash against the function
code and Powertools, so a rename or a new layer there fails the suite instead of this lookup.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from ops.aws import error_code
from ops.errors import NotFound
from ops.masking import mask_body

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# The layers keyed on the order id, in the order an order reaches them.
KEY_PREFIXES: Final = ("start_saga",)
# Layers that keep records but cannot be looked up from an order id (see above).
NOT_KEYED_ON_ORDER_ID: Final = frozenset({"place_order"})


def idempotency_key(prefix: str, order_id: str) -> str:
    # Powertools: json.dumps(value, sort_keys=True) then md5 (its default hash function).
    digest = hashlib.md5(
        json.dumps(order_id, sort_keys=True).encode(), usedforsecurity=False
    ).hexdigest()
    return f"{prefix}#{digest}"


def load_records(dynamodb: DynamoDBClient, table: str, order_id: str) -> list[dict[str, Any]]:
    now = datetime.now(tz=UTC)
    records: list[dict[str, Any]] = []
    for prefix in KEY_PREFIXES:
        key = idempotency_key(prefix, order_id)
        try:
            response = dynamodb.get_item(
                TableName=table, Key={"id": {"S": key}}, ConsistentRead=True
            )
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                raise NotFound(f"idempotency table not found: {table}") from error
            raise
        item = response.get("Item")
        if item is not None:
            records.append(_record(item, prefix, key, now))
    return records


def _record(item: dict[str, Any], prefix: str, key: str, now: datetime) -> dict[str, Any]:
    expiration = _epoch(item.get("expiration"))
    status = item.get("status", {}).get("S")
    # TTL deletion lags by up to days; Powertools already treats an expired record as absent.
    if expiration is not None and expiration < now:
        status = f"{status} (expired)"
    data = item.get("data", {}).get("S")
    return {
        # "step" is the key prefix; the name stays so `saga show --json` keeps its shape.
        "step": prefix,
        "key": key,
        "status": status,
        "expires_at": expiration,
        "in_progress_expires_at": _epoch(item.get("in_progress_expiration"), millis=True),
        "result": mask_body(data) if data is not None else None,
    }


def _epoch(attribute: dict[str, Any] | None, *, millis: bool = False) -> datetime | None:
    if not attribute or "N" not in attribute:
        return None
    value = int(attribute["N"])
    return datetime.fromtimestamp(value / 1000 if millis else value, tz=UTC)
