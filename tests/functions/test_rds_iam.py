"""The RDS IAM token the functions sign without an RDS client (issue 12) is the token
botocore's ``generate_db_auth_token`` makes: same host, port, user, region, credentials and
clock give the same string, byte for byte."""

from __future__ import annotations

import datetime
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore import auth
from orders_saga.adapters import rds_iam

FROZEN = datetime.datetime(2026, 12, 5, 17, 0, 0, tzinfo=datetime.UTC)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "get_current_datetime", lambda *a, **k: FROZEN)


@pytest.fixture
def role_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Lambda puts in a function's environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAEXAMPLEEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "IQoJb3JpZ2luX2VjEXAMPLE")


@pytest.mark.usefixtures("frozen_clock", "role_credentials")
@pytest.mark.parametrize(
    ("host", "port", "user", "region"),
    [
        ("orders.proxy-abc123.eu-west-1.rds.amazonaws.com", 5432, "orders_app", "eu-west-1"),
        ("db.internal", 6543, "user with space+plus", "us-east-1"),
    ],
)
def test_the_token_is_the_one_botocore_generate_db_auth_token_makes(
    host: str, port: int, user: str, region: str
) -> None:
    """Fails if: rds_iam signs for another service name, lifetime or method, puts the
    parameters elsewhere, keeps the scheme, or reads other credentials than the client does."""
    # A new session: boto3.client() would reuse a default session that cached other credentials.
    client = boto3.session.Session().client("rds", region_name=region)
    expected = client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)

    token = rds_iam.auth_token(host=host, port=port, user=user, region=region)

    assert token == expected
    query = parse_qs(urlsplit(f"https://{token}").query)
    assert query["Action"] == ["connect"]
    assert query["DBUser"] == [user]
    assert query["X-Amz-Expires"] == [str(rds_iam.TOKEN_LIFETIME_S)]
    assert query["X-Amz-Security-Token"] == ["IQoJb3JpZ2luX2VjEXAMPLE"]
    assert f"/{region}/rds-db/aws4_request" in query["X-Amz-Credential"][0]


def test_without_environment_credentials_the_botocore_chain_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """Outside Lambda (no role credentials in the environment) the token still signs, with what
    botocore's chain finds (here a shared credentials file)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    shared = f"{tmp_path}/credentials"
    with open(shared, "w", encoding="utf-8") as handle:
        handle.write("[default]\naws_access_key_id = AKIAFROMFILE\naws_secret_access_key = s\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", shared)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    token = rds_iam.auth_token(host="h", port=5432, user="u", region="eu-west-1")

    assert "X-Amz-Credential=AKIAFROMFILE" in token
