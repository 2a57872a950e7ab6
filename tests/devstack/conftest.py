"""Fixtures for the devstack's own tests.

``local_postgres``, ``postgres_settings`` and ``payment_provider`` come from tests/fixtures.py
(promoted there from this file); only the raw HTTP client is specific to these tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import urllib3


@pytest.fixture
def payment_http() -> Iterator[urllib3.PoolManager]:
    """An HTTP client that never retries on its own: each test sees every failure."""
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=5.0))
    try:
        yield http
    finally:
        http.clear()
