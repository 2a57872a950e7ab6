"""Errors the saga reacts to. The class name is the Lambda ``errorType`` Step Functions sees.

Business outcomes (``OutOfStock``, ``PaymentDeclined``) are caught by the state machine without
retry; ``TransientError`` is retried with jittered backoff (F03). Keep the names stable: they
appear in the state machine definition (infra/saga.py).
"""

from __future__ import annotations


class OutOfStock(Exception):
    """Not enough units to reserve: ends the order without retry."""


class PaymentDeclined(Exception):
    """The provider refused the charge: ends the order without retry."""


class TransientError(Exception):
    """A dependency failed in a way that may pass: retried by Step Functions with jitter."""


class InvalidInput(ValueError):
    """The input does not match the contract: never retried, sent to a DLQ or answered 4xx."""
