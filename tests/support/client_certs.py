"""Test certificates made with `cryptography`: a CA, certificates it signs, and self-signed ones."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Cert:
    """A certificate and its private key, PEM; `fingerprint` is the SHA-256 of the DER, hex."""

    cert_pem: bytes
    key_pem: bytes
    der: bytes
    _key: ec.EllipticCurvePrivateKey
    _name: x509.Name

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def pair(self) -> tuple[bytes, bytes]:
        """(cert, key) for FakeServer(tls=...)."""
        return self.cert_pem, self.key_pem


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_cert(common_name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), issuer: Cert | None = None,
              ca: bool = False) -> Cert:
    """A certificate for `dns` names and `ips`, signed by `issuer` (self-signed if None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer._name if issuer else subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    alt: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(issuer._key if issuer else key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Cert(cert.public_bytes(serialization.Encoding.PEM), key_pem,
                cert.public_bytes(serialization.Encoding.DER), key, subject)
