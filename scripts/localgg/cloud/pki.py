"""Certificates like IoT Core's: a CA, a server certificate for the broker, one per thing.

Usage::

    ca = CertificateAuthority.load_or_create(Path("cloud/pki"))
    ca.issue_server(Path("cloud/pki"), ["localhost", "127.0.0.1"])   # server.crt, server.key
    ca.issue_device(Path("root"), "my-thing")    # thingCert.crt, privKey.key, rootCA.pem

Elliptic-curve P-256 keys, SHA-256 signatures. Keys are written with mode 0600.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 3650


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Created with mode 0600: never readable by others, not even for a moment."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "localgg"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path

    @classmethod
    def load_or_create(cls, directory: Path) -> "CertificateAuthority":
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            return cls(cert, key, cert_path)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name("localgg IoT Core CA")).issuer_name(_name("localgg IoT Core CA"))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
                .sign(key, hashes.SHA256()))
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, cert_path)

    def _issue(self, common_name: str, usage: x509.ObjectIdentifier,
               names: list[str] = ()) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=VALID_DAYS))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if names:
            sans = [x509.IPAddress(ipaddress.ip_address(n)) if n.replace(".", "").isdigit() else x509.DNSName(n)
                    for n in names]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def issue_server(self, directory: Path, names: list[str]) -> tuple[Path, Path]:
        cert, key = self._issue(names[0], ExtendedKeyUsageOID.SERVER_AUTH, names)
        cert_path, key_path = directory / "server.crt", directory / "server.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path

    def issue_client(self, directory: Path, name: str, cert_file: str = "thingCert.crt",
                     key_file: str = "privKey.key", ca_file: str = "rootCA.pem") -> tuple[Path, Path, Path]:
        """A client certificate whose common name is `name` (a thing, or a cloud tool)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = self._issue(name, ExtendedKeyUsageOID.CLIENT_AUTH)
        paths = directory / cert_file, directory / key_file, directory / ca_file
        paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(paths[1], key)
        paths[2].write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return paths
