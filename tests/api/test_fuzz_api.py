"""Property-based contract tests of the public API against docs/openapi.json (schemathesis).

The local stack's gateway (Cognito authorizer, request validator, the real Api function) is
fuzzed with bounded, deterministic examples: no answer is a 5xx, every status code, content
type, header and body is the one the document declares, and data the document refuses is
refused. Every generated ``POST /orders`` gets an Idempotency-Key no earlier request used, so
a 422 is never the legitimate answer to a reused key.
"""

from __future__ import annotations

import re
import threading
import uuid
from typing import Any, ClassVar, Final

import jwt
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckFunction
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infra.openapi import IDEMPOTENCY_HEADER
from tests.api.conftest import OPENAPI_DOC, ApiTarget

AnyCase = Case[Any]  # schemathesis' operation type has four parameters of its own
MAX_EXAMPLES: Final = 25
CHECKS: Final[list[CheckFunction]] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
BOUNDED: Final = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # a fixed seed: the same examples on every run
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its case
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
EMULATED_METHODS: Final = ["get", "put", "post", "delete", "options", "patch", "trace", "query"]
_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")

# Loaded eagerly: the lazy ``schemathesis.pytest.from_fixture`` of 4.32.5 reads
# ``request.node._nodeid``, which pytest 9.2 no longer has. The base URL is the per-package
# stack's, given to every call.
schema = schemathesis.openapi.from_path(
    OPENAPI_DOC,
    config=schemathesis.Config.from_dict(
        # The coverage phase also sends methods the API does not have; every one reaches
        # the emulated gateway's routing (devstack/gateway.py), as on API Gateway.
        {"phases": {"coverage": {"unexpected-methods": EMULATED_METHODS}}}
    ),
)


class _UniqueKeys:
    """Keeps a generated Idempotency-Key unless an earlier request sent it."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def apply(self, case: AnyCase) -> None:
        if case.operation.method.upper() != "POST":
            return
        key = case.headers.get(IDEMPOTENCY_HEADER)
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            return  # a missing or malformed key is the point of this case: 400 before any use
        with self._lock:
            if key in self._seen:
                key = f"fuzz-{uuid.uuid4().hex}"
                case.headers[IDEMPOTENCY_HEADER] = key
            self._seen.add(key)


_unique_keys = _UniqueKeys()


@schema.parametrize()
@BOUNDED
def test_api_conforms_to_its_document(case: AnyCase, api_target: ApiTarget) -> None:
    _unique_keys.apply(case)
    case.call_and_validate(
        base_url=api_target.base_url,
        headers={"Authorization": api_target.token},
        checks=CHECKS,
    )


def _garbage_tokens(valid: str) -> dict[str, str]:
    header, payload, signature = valid.split(".")
    claims = jwt.decode(valid, options={"verify_signature": False})
    return {
        "empty": "",
        "not a jwt": "not-a-jwt",
        "bearer prefix on garbage": "Bearer a.b.c",
        "tampered signature": f"{header}.{payload}.{signature[::-1]}",
        "forged with another key": jwt.encode(
            claims, "not-the-pool-key-but-long-enough-for-hs256", algorithm="HS256"
        ),
        "expired": jwt.encode(
            {**claims, "exp": 1},
            "not-the-pool-key-but-long-enough-for-hs256",
            algorithm="HS256",
            headers={"kid": "x"},
        ),
    }


@given(
    case=schema["/orders"]["POST"].as_strategy(),
    which=st.sampled_from(
        [
            "empty",
            "not a jwt",
            "bearer prefix on garbage",
            "tampered signature",
            "forged with another key",
            "expired",
        ]
    ),
)
@BOUNDED
def test_unauthenticated_writes_are_refused(
    case: AnyCase, which: str, api_target: ApiTarget
) -> None:
    case.headers[IDEMPOTENCY_HEADER] = f"anon-{uuid.uuid4().hex}"
    case.headers.pop("Authorization", None)
    anonymous = case.call(base_url=api_target.base_url)
    assert anonymous.status_code in {401, 403}, (anonymous.status_code, anonymous.text)
    garbage = _garbage_tokens(api_target.token)[which]
    refused = case.call(base_url=api_target.base_url, headers={"Authorization": garbage})
    assert refused.status_code in {401, 403}, (which, refused.status_code, refused.text)


# -- stateful: POST an order, then GET it back through the document's link -------------------

STATEFUL_EXAMPLES: Final = 10
STATEFUL_STEPS: Final = 4
# GET 200 exists only for an order the caller placed: the stateless run above never reaches
# it (its order ids are random, so 404). The document's GetOrder link (202 -> getOrder with
# $response.body#/order_id) lets the state machine GET each order it has just placed.
MUST_SEE: Final = {("POST", 202), ("POST", 400), ("GET", 200), ("GET", 404)}


class ApiWorkflow(schema.as_state_machine()):  # type: ignore[misc]
    """POST /orders -> GET /orders/{order_id} with the id from the 202, every response checked
    against the document with the same checks as the stateless run."""

    target: ApiTarget
    seen: ClassVar[set[tuple[str, int]]] = set()

    def before_call(self, case: AnyCase) -> None:
        _unique_keys.apply(case)

    def get_call_kwargs(self, case: AnyCase) -> dict[str, Any]:
        return {"base_url": self.target.base_url, "headers": {"Authorization": self.target.token}}

    def validate_response(
        self, response: Any, case: AnyCase, additional_checks: Any = None, **kwargs: Any
    ) -> None:
        self.seen.add((case.operation.method.upper(), response.status_code))
        case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"))


def test_api_workflow_conforms_to_its_document(api_target: ApiTarget) -> None:
    """Given the document's GetOrder link, when the state machine places orders and follows
    the link, then every answer of both operations, GET 200 included, matches the document;
    a GET of an id the caller does not own is a documented 404."""
    ApiWorkflow.target = api_target
    ApiWorkflow.seen.clear()
    ApiWorkflow.run(
        settings=settings(
            BOUNDED, max_examples=STATEFUL_EXAMPLES, stateful_step_count=STATEFUL_STEPS
        )
    )
    unknown = schema["/orders/{order_id}"]["GET"].Case(
        path_parameters={"order_id": str(uuid.uuid4())}
    )
    response = unknown.call_and_validate(
        base_url=api_target.base_url, headers={"Authorization": api_target.token}, checks=CHECKS
    )
    ApiWorkflow.seen.add(("GET", response.status_code))

    assert not MUST_SEE - ApiWorkflow.seen, sorted(ApiWorkflow.seen)
