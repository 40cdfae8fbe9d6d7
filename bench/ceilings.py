"""Ceilings measured in the bench's own process: per-operation crypto costs and fsync latency.

The network ceiling (plain trio TCP between two processes) is measured by bench.wire_peer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._stats import summarize

__all__ = ["crypto_ceilings", "fsync_ceiling"]


def _per_op(fn: Callable[[], object], ops: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn``: one sample per repeat of ``ops`` calls (after a warm-up)."""
    for _ in range(min(ops, 50)):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(ops):
            fn()
        samples.append((time.perf_counter() - t0) / ops)
    return samples


def crypto_ceilings(ops: int, repeats: int) -> dict[str, dict[str, Any]]:
    import nacl.signing
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    message = os.urandom(1024)
    signing = nacl.signing.SigningKey(os.urandom(32))
    verify_key = signing.verify_key
    signature = signing.sign(message).signature
    sign_samples = _per_op(lambda: signing.sign(message), ops, repeats)
    verify_samples = _per_op(lambda: verify_key.verify(message, signature), ops, repeats)

    aead = ChaCha20Poly1305(ChaCha20Poly1305.generate_key())  # Cached, as a session keeps it.
    nonce = bytes(12)
    ciphertext = aead.encrypt(nonce, message, None)
    aead_ops = ops * 10
    encrypt_samples = _per_op(lambda: aead.encrypt(nonce, message, None), aead_ops, repeats)
    decrypt_samples = _per_op(lambda: aead.decrypt(nonce, ciphertext, None), aead_ops, repeats)
    what: dict[str, Any] = {"ops_per_repeat": ops, "message_bytes": len(message)}
    return {
        "ceiling.ed25519_sign_us": summarize(sign_samples, "us/op", scale=1e6,
                                             library="pynacl", **what),
        "ceiling.ed25519_verify_us": summarize(verify_samples, "us/op", scale=1e6,
                                               library="pynacl", **what),
        "ceiling.ed25519_sign_per_s": summarize([1 / s for s in sign_samples], "ops/s",
                                                library="pynacl", **what),
        "ceiling.ed25519_verify_per_s": summarize([1 / s for s in verify_samples], "ops/s",
                                                  library="pynacl", **what),
        "ceiling.chacha20poly1305_encrypt_1k_us": summarize(
            encrypt_samples, "us/op", scale=1e6, library="cryptography",
            ops_per_repeat=aead_ops, message_bytes=len(message)),
        "ceiling.chacha20poly1305_decrypt_1k_us": summarize(
            decrypt_samples, "us/op", scale=1e6, library="cryptography",
            ops_per_repeat=aead_ops, message_bytes=len(message)),
    }


def fsync_ceiling(directory: Path, count: int) -> dict[str, dict[str, Any]]:
    """Append 1 KiB to a file and fsync it, ``count`` times: one sample per fsync."""
    path = directory / "fsync-probe"
    block = os.urandom(1024)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    samples = []
    try:
        for index in range(count + 5):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            if index >= 5:
                samples.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return {"ceiling.fsync_ms": summarize(samples, "ms", scale=1e3, p99=True,
                                          method="append 1 KiB + os.fsync, same directory "
                                                 "as the stores")}
