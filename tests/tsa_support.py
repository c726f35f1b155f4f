"""A real RFC 3161 time-stamping authority for the tests: ``openssl ts -reply`` behind a tiny
HTTP server on 127.0.0.1. Each POSTed TimeStampReq is written to a file and answered by one
``openssl ts -reply`` run, whose DER TimeStampResp goes back as application/timestamp-reply.

Its certificate is made here: a fresh P-256 key certified, with the critical extended key usage
id-kp-timeStamping (RFC 3161 §2.3), by the demo CA of keys.example (or by any CA given, e.g. a
throwaway one for a TSA an auditor does not trust).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import DEMO_KEYS
from tests.tools import require_tool

DEMO_CA_CERT = DEMO_KEYS / "ca.crt.pem"
REPLY_TYPE = "application/timestamp-reply"


def demo_ca() -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    """The demo root CA of keys.example and its key (RSA, encrypted with the demo passphrase)."""
    passphrase = (DEMO_KEYS / "passphrase.txt").read_bytes().strip()
    key = serialization.load_pem_private_key((DEMO_KEYS / "ca.key.pem").read_bytes(), passphrase)
    assert isinstance(key, rsa.RSAPrivateKey)
    return x509.load_pem_x509_certificate(DEMO_CA_CERT.read_bytes()), key


def throwaway_ca(common_name: str = "Untrusted Test Root CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def tsa_certificate(
    issuer: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    common_name: str,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A time-stamping certificate (EKU id-kp-timeStamping, critical) issued by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert, key


class OpensslTsa:
    """A running TSA; ``url`` takes RFC 3161 requests over HTTP. Use as a context manager.

    Misbehaviour on demand: ``available = False`` answers 503 (a TSA that is down); ``delay``
    seconds are waited before each answer (a slow TSA); ``answer_to`` (a DER request) is answered
    instead of the request received (a time-stamp over another message, with another nonce)."""

    def __init__(
        self,
        directory: Path,
        issuer: tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes] | None = None,
        common_name: str = "BHXH Test TSA",
    ) -> None:
        self.openssl = require_tool("openssl", "openssl")
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key = issuer or demo_ca()
        self.certificate, key = tsa_certificate(ca_cert, ca_key, common_name)
        self.key_file = directory / "tsa.key.pem"
        self.cert_file = directory / "tsa.crt.pem"
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.cert_file.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        (directory / "serial").write_text("01\n")
        self.config = directory / "tsa.cnf"
        self.config.write_text(
            "[ tsa ]\n"
            "default_tsa = tsa_config\n"
            "[ tsa_config ]\n"
            f"serial = {directory / 'serial'}\n"
            "crypto_device = builtin\n"
            "signer_digest = sha256\n"
            "default_policy = 1.3.6.1.4.1.99999.3161.1\n"
            "other_policies = 1.3.6.1.4.1.99999.3161.2\n"
            "digests = sha256, sha384, sha512\n"
            "accuracy = secs:1\n"
            "ordering = no\n"
            "tsa_name = yes\n"
            "ess_cert_id_chain = no\n"
            "ess_cert_id_alg = sha256\n"
        )
        self.available = True
        self.delay = 0.0
        self.answer_to: bytes | None = None
        self.requests = 0
        self._lock = threading.Lock()  # openssl increments the serial file: one run at a time
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-tsa", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/tsa"

    def __enter__(self) -> OpensslTsa:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def reply(self, query: bytes) -> bytes:
        """Run ``openssl ts -reply`` over one DER TimeStampReq; returns the DER TimeStampResp."""
        with self._lock, tempfile.TemporaryDirectory(dir=self.directory) as work:
            query_file, reply_file = Path(work) / "query.tsq", Path(work) / "reply.tsr"
            query_file.write_bytes(query)
            subprocess.run(
                [
                    self.openssl,
                    "ts",
                    "-reply",
                    "-config",
                    str(self.config),
                    "-queryfile",
                    str(query_file),
                    "-inkey",
                    str(self.key_file),
                    "-signer",
                    str(self.cert_file),
                    "-out",
                    str(reply_file),
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            return reply_file.read_bytes()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if tsa.delay:
                    time.sleep(tsa.delay)
                if not tsa.available:
                    self._send(503, b"down", "text/plain")
                    return
                try:
                    answer = tsa.reply(tsa.answer_to or body)
                except subprocess.CalledProcessError as exc:
                    self._send(400, exc.stderr or b"openssl failed", "text/plain")
                    return
                tsa.requests += 1
                self._send(200, answer, REPLY_TYPE)

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
