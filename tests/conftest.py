"""Suite-wide set-up: no real AWS, ever; one moto server and one PostgreSQL per session.

The environment is fixed before any function module is imported, because Lambda modules read
their configuration and build their clients at init, as they do in AWS.
"""

from __future__ import annotations

import os
import socket

import pytest

from infra.service import this_service

# Never reach a real account: dummy credentials, a fixed region, no profile.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_name, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_SERVICE_NAME": this_service().name,
        "POWERTOOLS_METRICS_NAMESPACE": this_service().metrics_namespace,
        # moto serves the dev stage's account (service.yml), the one baked into the dev
        # template's ARNs: the local stack needs it, and one account for the whole session keeps
        # every test's resources in one place (moto's default is 123456789012).
        "MOTO_ACCOUNT_ID": this_service().stage("dev").account,
        "IDEMPOTENCY_TABLE": "test-idempotency",
        # jsii (CDK) prints a banner per process on Node 20; the pinned toolchain supports it.
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The moto server's address is fixed now, before any client exists: function modules build
# their clients at import, and boto3 reads AWS_ENDPOINT_URL when a client is made.
MOTO_PORT = free_loopback_port()
os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{MOTO_PORT}"
os.environ["MOTO_PORT"] = str(MOTO_PORT)

pytest_plugins = ["tests.fixtures", "tests.synth", "tests.localstack"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the session's local stack run last (stable sort: order otherwise unchanged).

    While that stack runs it owns MOTO_PORT and moto's process-wide backends, which the
    handler-level fixtures (tests/fixtures.py) bind and reset; started any earlier, it would
    stay up under them until the session ends."""
    items.sort(key=lambda item: "local_stack" in getattr(item, "fixturenames", ()))
