"""Saying what the service made: every MP4 it writes carries a C2PA manifest stating that it is
AI-generated (the EU AI Act's transparency duty for deepfakes: machine-readable marking).

The manifest (built and embedded by ``c2pa-python``, the Content Authenticity Initiative's library) has
one ``c2pa.created`` action whose ``digitalSourceType`` is IPTC's ``trainedAlgorithmicMedia``, with this
software as the agent, and is signed. A deployment supplies its signing certificate chain and key
(``AVATAR_C2PA_CERT_FILE``, ``AVATAR_C2PA_KEY_FILE``: PEM, ES256, a certificate for signing issued by a
CA that verifiers trust). Without them a test certificate authority and a signing certificate are made
at start-up, in memory: the mark is there and verifies, but names no trusted signer (a verifier reports
``signingCredential.untrusted``), which the log says once.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import c2pa
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from avatar import __version__
from avatar.errors import ConfigError

log = structlog.stdlib.get_logger(__name__)

AI_GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
TEST_ISSUER = "avatar self-signed test CA (not trusted)"


@dataclass(frozen=True)
class Credentials:
    """A PEM certificate chain (the signer first) and its PEM private key; ``test``: made here."""

    chain: bytes
    key: bytes
    test: bool = False


class Provenance:
    """Signs MP4 files with the AI-generated manifest (thread-safe: called from worker threads)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._lock = threading.Lock()

    @classmethod
    def from_files(cls, cert_file: str, key_file: str) -> Provenance:
        """The deployment's certificate chain and key, or a test certificate when neither is given
        (ConfigError for only one of them, or for a file that cannot be read)."""
        if not cert_file and not key_file:
            log.warning(
                "C2PA manifests are signed with a self-signed test certificate; set AVATAR_C2PA_CERT_FILE "
                "and AVATAR_C2PA_KEY_FILE for one that verifiers trust"
            )
            return cls(self_signed_credentials())
        if not (cert_file and key_file):
            raise ConfigError("Set both AVATAR_C2PA_CERT_FILE and AVATAR_C2PA_KEY_FILE (PEM), or neither.")
        try:
            chain, key = Path(cert_file).expanduser().read_bytes(), Path(key_file).expanduser().read_bytes()
        except OSError as exc:
            raise ConfigError(f"The C2PA certificate or key cannot be read: {exc}") from None
        return cls(Credentials(chain, key))

    def manifest(self, title: str) -> dict[str, object]:
        return {
            "claim_generator_info": [{"name": "avatar", "version": __version__}],
            "title": title,
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": AI_GENERATED,
                                "softwareAgent": {"name": "avatar", "version": __version__},
                                "description": "A talking-head video generated from a photo by AI models "
                                "(speech recognition, a language model, speech synthesis, face animation).",
                            }
                        ]
                    },
                }
            ],
        }

    def sign_mp4(self, path: Path) -> None:
        """Embed the signed manifest in the MP4 at ``path`` (rewritten in place, atomically)."""
        signed = path.with_name(f".{path.name}.signing.mp4")
        try:
            with self._lock:
                info = c2pa.C2paSignerInfo(
                    c2pa.C2paSigningAlg.ES256, self.credentials.chain, self.credentials.key, None
                )
                with (
                    c2pa.Signer.from_info(info) as signer,
                    c2pa.Builder(json.dumps(self.manifest(path.name))) as builder,
                ):
                    builder.sign_file(path, signed, signer)
            os.replace(signed, path)
        finally:
            signed.unlink(missing_ok=True)


def self_signed_credentials(days: int = 3650) -> Credentials:
    """A test CA and a signing certificate it issued (C2PA refuses a self-signed end certificate)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name, signer_name = _name(TEST_ISSUER), _name("avatar test signer")
    ca = (
        _certificate(ca_name, ca_name, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    signer = (
        _certificate(signer_name, ca_name, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = signer.public_bytes(pem) + ca.public_bytes(pem)
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return Credentials(chain, private, test=True)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "avatar")]
    )


def _certificate(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
