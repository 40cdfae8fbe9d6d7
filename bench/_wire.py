"""The baselines' transports: length-prefixed records over plain TCP, TLS 1.3, or Noise IK.

Every baseline sends the same records the same way: a 4-byte big-endian length, then the
payload, one ``send_all`` per record. TLS is the standard library's ``ssl`` with mutual
certificates (a throwaway CA and two ECDSA P-256 certificates made at run time with
``cryptography``). Noise is the ``noiseprotocol`` package running
``Noise_IK_25519_ChaChaPoly_BLAKE2b``: the handshake's two messages, then transport messages,
each behind a 2-byte length (the Noise spec's framing); a record longer than one Noise message
travels in several.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import trio

__all__ = [
    "NOISE_NAME",
    "NoiseStream",
    "RecordReader",
    "client_tls_context",
    "frame",
    "make_certificates",
    "noise_initiate",
    "noise_respond",
    "server_tls_context",
]

NOISE_NAME = b"Noise_IK_25519_ChaChaPoly_BLAKE2b"
_NOISE_MAX_PLAIN = 65535 - 16
_READ = 262144


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


class RecordReader:
    """Reads length-prefixed records from a stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.offset = 0

    async def read(self) -> bytes:
        while True:
            available = len(self.buffer) - self.offset
            if available >= 4:
                size = int.from_bytes(self.buffer[self.offset:self.offset + 4], "big")
                if available >= 4 + size:
                    start = self.offset + 4
                    record = bytes(self.buffer[start:start + size])
                    self.offset = start + size
                    return record
            if self.offset:
                del self.buffer[:self.offset]
                self.offset = 0
            chunk = await self.stream.receive_some(_READ)
            if not chunk:
                raise EOFError("the stream ended")
            self.buffer += chunk


# --- TLS ---------------------------------------------------------------------------------


def make_certificates(directory: Path) -> dict[str, str]:
    """A throwaway CA and a server and a client certificate signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("hotline bench CA")).issuer_name(name("hotline bench CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": str(directory / "ca.pem")}
    Path(paths["ca"]).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(f"hotline bench {role}")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if role == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        paths[f"{role}_cert"] = str(directory / f"{role}.pem")
        paths[f"{role}_key"] = str(directory / f"{role}.key")
        Path(paths[f"{role}_cert"]).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        Path(paths[f"{role}_key"]).write_bytes(key_pem(key))
    return paths


def server_tls_context(paths: dict[str, str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(paths["server_cert"], paths["server_key"])
    context.load_verify_locations(paths["ca"])
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls_context(paths: dict[str, str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(paths["client_cert"], paths["client_key"])
    context.load_verify_locations(paths["ca"])
    context.check_hostname = True
    return context


# --- Noise -------------------------------------------------------------------------------


class NoiseStream(trio.abc.Stream):
    """Transport messages of a finished ``noiseprotocol`` handshake over a byte stream."""

    def __init__(self, stream: trio.abc.Stream, noise: Any, leftover: bytes = b"") -> None:
        self.stream = stream
        self.noise = noise
        self.buffer = bytearray(leftover)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        out = bytearray()
        encrypt = self.noise.encrypt
        for start in range(0, len(data), _NOISE_MAX_PLAIN):
            ciphertext = encrypt(data[start:start + _NOISE_MAX_PLAIN])
            out += len(ciphertext).to_bytes(2, "big")
            out += ciphertext
        await self.stream.send_all(out)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        decrypt = self.noise.decrypt
        while True:
            plain = []
            offset = 0
            buffer = self.buffer
            while len(buffer) - offset >= 2:
                size = int.from_bytes(buffer[offset:offset + 2], "big")
                if len(buffer) - offset - 2 < size:
                    break
                plain.append(decrypt(bytes(buffer[offset + 2:offset + 2 + size])))
                offset += 2 + size
            if offset:
                del buffer[:offset]
            if plain:
                return b"".join(plain)
            chunk = await self.stream.receive_some(_READ)
            if not chunk:
                return b""
            buffer += chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _read_noise_frame(stream: trio.abc.Stream, buffer: bytearray) -> bytes:
    while True:
        if len(buffer) >= 2:
            size = int.from_bytes(buffer[:2], "big")
            if len(buffer) >= 2 + size:
                message = bytes(buffer[2:2 + size])
                del buffer[:2 + size]
                return message
        chunk = await stream.receive_some(_READ)
        if not chunk:
            raise EOFError("the stream ended during the handshake")
        buffer += chunk


def _noise(initiator: bool, private: bytes, remote_public: bytes | None) -> Any:
    from noise.connection import Keypair, NoiseConnection

    noise = NoiseConnection.from_name(NOISE_NAME)
    if initiator:
        noise.set_as_initiator()
    else:
        noise.set_as_responder()
    noise.set_keypair_from_private_bytes(Keypair.STATIC, private)
    if remote_public is not None:
        noise.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_public)
    noise.start_handshake()
    return noise


async def noise_initiate(stream: trio.abc.Stream, private: bytes, responder: bytes) -> NoiseStream:
    noise = _noise(True, private, responder)
    message = bytes(noise.write_message())
    await stream.send_all(len(message).to_bytes(2, "big") + message)
    buffer = bytearray()
    noise.read_message(await _read_noise_frame(stream, buffer))
    assert noise.handshake_finished
    return NoiseStream(stream, noise, bytes(buffer))


async def noise_respond(stream: trio.abc.Stream, private: bytes) -> NoiseStream:
    noise = _noise(False, private, None)
    buffer = bytearray()
    noise.read_message(await _read_noise_frame(stream, buffer))
    message = bytes(noise.write_message())
    await stream.send_all(len(message).to_bytes(2, "big") + message)
    assert noise.handshake_finished
    return NoiseStream(stream, noise, bytes(buffer))
