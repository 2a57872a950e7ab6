"""Mask secrets before anything from a queue, an execution or the database is printed.

Ops output ends up in tickets and chat. Message bodies carry the customer's payment method,
and error causes can echo request headers, so values of sensitive keys and anything shaped
like a JWT or a bearer token are replaced wherever they appear.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

MASK: Final = "***"

SENSITIVE_KEY: Final = re.compile(
    r"payment_method|token|password|passwd|secret|authorization|card|api_key|cvc|cvv",
    re.IGNORECASE,
)
# header.payload.signature, both JSON parts base64url of "{" (so starting "eyJ").
JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
BEARER: Final = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# key: value / key=value inside free text: JSON, Python reprs, headers. Free text adds
# ``input``: a pydantic error (the intake's DLQ reason) echoes the rejected value there, and
# the sensitive field's name is only in its ``loc``.
KEY_VALUE: Final = re.compile(
    r"""(?P<key>["']?[\w-]*(?:payment_method|token|password|passwd|secret|authorization|card|"""
    r"""api_key|cvc|cvv|input)[\w-]*["']?\s*[:=]\s*)(?P<value>"[^"]*"|'[^']*'|[^\s,;}\]]+)""",
    re.IGNORECASE,
)


def is_sensitive_key(key: str) -> bool:
    return SENSITIVE_KEY.search(key) is not None


def mask_text(text: str) -> str:
    text = JWT.sub(MASK, text)
    text = BEARER.sub(lambda m: m.group(1) + MASK, text)
    return KEY_VALUE.sub(lambda m: m.group("key") + _quoted_mask(m.group("value")), text)


def _quoted_mask(value: str) -> str:
    if value[:1] in {'"', "'"}:
        return value[0] + MASK + value[0]
    return MASK


def mask_value(value: Any) -> Any:
    """Mask a decoded JSON value: sensitive keys lose their value, strings are scanned."""
    if isinstance(value, dict):
        return {
            key: MASK if is_sensitive_key(str(key)) else mask_value(inner)
            for key, inner in value.items()
        }
    if isinstance(value, list):
        return [mask_value(inner) for inner in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_body(body: str) -> Any:
    """A message body as a masked JSON value, or masked text when it is not JSON."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return mask_text(body)
    return mask_value(decoded)
