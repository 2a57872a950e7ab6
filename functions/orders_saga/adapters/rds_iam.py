"""RDS Proxy IAM auth tokens, signed locally with botocore's SigV4 query signer (F06, F14).

A token is a presigned ``rds-db:connect`` URL without its scheme, valid for 15 minutes; making
one is a signature, not an API call. botocore offers it only as a method of a full RDS client,
and building that client imports botocore's client machinery and loads the RDS service model:
about 75 ms on the CI machine (178 ms against 101 ms for the signer alone) for one signature
(issue 12, docs/performance.md).
So the token is made here from the same botocore pieces the client method uses, in the same
order (``prepare_request_dict``, ``create_request_object``, ``SigV4QueryAuth``), and
``tests/functions/test_rds_iam.py`` proves it is byte for byte the token the client makes.
"""

from __future__ import annotations

from typing import Any, Final

from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import create_request_object, prepare_request_dict
from botocore.credentials import Credentials, EnvProvider

TOKEN_LIFETIME_S: Final = 900  # what RDS accepts, and what botocore's own method signs for
SIGNING_NAME: Final = "rds-db"


def credentials() -> Credentials:
    """The function role's credentials: Lambda puts them in the environment.

    Elsewhere (local tools, a developer's shell) the full botocore chain is the fallback; it is
    imported only then, so it costs a Lambda cold start nothing."""
    found = EnvProvider().load()
    if found is not None:
        return found
    import botocore.session  # noqa: PLC0415 - never on a Lambda cold start

    chained = botocore.session.get_session().get_credentials()
    if chained is None:
        raise RuntimeError("no AWS credentials to sign an RDS IAM token with")
    return chained


def auth_token(*, host: str, port: int, user: str, region: str) -> str:
    """The password for ``user`` at ``host:port``: what ``generate_db_auth_token`` returns."""
    # The scheme is only there for URL parsing; RDS wants the token without it.
    scheme = "https://"
    request_dict: dict[str, Any] = {
        "url_path": "/",
        "query_string": "",
        "headers": {},
        "body": {"Action": "connect", "DBUser": user},
        "method": "GET",
    }
    prepare_request_dict(request_dict, f"{scheme}{host}:{port}")
    request = create_request_object(request_dict)
    signer = SigV4QueryAuth(
        credentials().get_frozen_credentials(), SIGNING_NAME, region, expires=TOKEN_LIFETIME_S
    )
    signer.add_auth(request)
    prepared = request.prepare()
    return str(prepared.url)[len(scheme) :]
