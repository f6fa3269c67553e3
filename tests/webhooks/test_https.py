"""Webhooks over real TLS: the connection goes to the vetted address, and the certificate is checked
against the URL's host name (SNI and verification), not against the address.

A receiver on 127.0.0.1 serves a certificate for `localhost` made here
(cryptography); the test trusts it through SSL_CERT_FILE, which Python's
default TLS context reads.
"""

import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from webhooks import transport

pytestmark = pytest.mark.django_db


def self_signed(folder, host: str):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture
def tls_receiver(receiver, tmp_path, monkeypatch, local_webhooks):
    cert_file, key_file = self_signed(tmp_path, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    return receiver


def post(url: str) -> transport.Answer:
    return transport.post(url=url, body='{"type": "test"}', headers={}, timeout=5)


def test_a_certificate_for_the_urls_host_is_accepted(tls_receiver):
    port = tls_receiver.server.server_address[1]
    answer = post(f"https://localhost:{port}/hooks")
    assert (answer.status_code, answer.error) == (200, "")
    [delivery] = tls_receiver.deliveries
    assert delivery.headers["host"] == f"localhost:{port}"


def test_a_certificate_for_another_name_is_refused(tls_receiver):
    port = tls_receiver.server.server_address[1]
    answer = post(f"https://127.0.0.1:{port}/hooks")  # the certificate names localhost, not 127.0.0.1
    assert answer.status_code is None
    assert "certificate" in answer.error.lower() or "hostname" in answer.error.lower(), answer.error
    assert tls_receiver.deliveries == []
