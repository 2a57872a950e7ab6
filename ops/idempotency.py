"""Read an order's idempotency records by their exact keys (no table scan).

The functions key every record on the order id with the step as Powertools' ``key_prefix``
(``orders_saga/logic/intake.py``, ``logic/saga_steps.py``). Powertools stores
``<key_prefix>#<md5 of the JSON-encoded key value>``; the key value is the order id string.
``tests/ops/test_idempotency_keys.py`` checks both the prefixes and the hash against the
function code and Powertools, so a rename there fails the suite instead of this lookup.
The Api's ``place_order`` record is keyed on (customer, Idempotency-Key header), which the
order id cannot give back, so it is not listed.
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
    from mypy_boto3_dynamodb.type_defs import KeysAndAttributesTypeDef

# In the order the saga reaches them.
KEY_PREFIXES: Final = (
    "start_saga",
    "reserve_inventory",
    "take_payment",
    "confirm_order",
    "refund_payment",
    "release_inventory",
    "mark_order_failed",
)
# BatchGetItem can hand keys back under load; retried a bounded number of times (F03).
MAX_BATCH_ATTEMPTS: Final = 3


def idempotency_key(prefix: str, order_id: str) -> str:
    # Powertools: json.dumps(value, sort_keys=True) then md5 (its default hash function).
    digest = hashlib.md5(
        json.dumps(order_id, sort_keys=True).encode(), usedforsecurity=False
    ).hexdigest()
    return f"{prefix}#{digest}"


def load_records(dynamodb: DynamoDBClient, table: str, order_id: str) -> list[dict[str, Any]]:
    keys = {idempotency_key(prefix, order_id): prefix for prefix in KEY_PREFIXES}
    request: dict[str, KeysAndAttributesTypeDef] = {
        table: {"Keys": [{"id": {"S": key}} for key in keys], "ConsistentRead": True}
    }
    items: list[dict[str, Any]] = []
    for _ in range(MAX_BATCH_ATTEMPTS):
        try:
            response = dynamodb.batch_get_item(RequestItems=request)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                raise NotFound(f"idempotency table not found: {table}") from error
            raise
        items.extend(response.get("Responses", {}).get(table, []))
        unprocessed = response.get("UnprocessedKeys", {})
        if not unprocessed:
            break
        request = dict(unprocessed)  # type: ignore[arg-type]
    now = datetime.now(tz=UTC)
    records = [_record(item, keys, now) for item in items]
    return sorted(records, key=lambda r: KEY_PREFIXES.index(r["step"]))


def _record(item: dict[str, Any], steps: dict[str, str], now: datetime) -> dict[str, Any]:
    key = item["id"]["S"]
    expiration = _epoch(item.get("expiration"))
    status = item.get("status", {}).get("S")
    # TTL deletion lags by up to days; Powertools already treats an expired record as absent.
    if expiration is not None and expiration < now:
        status = f"{status} (expired)"
    data = item.get("data", {}).get("S")
    return {
        "step": steps[key],
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
