"""The simulator's RSA server key: generated at start, trusted by clients through ``pointed_at``.

MTProto's handshake encrypts ``p_q_inner_data`` with the server's RSA key. The kurigram pinned here
(2.2.26) uses the original scheme: ``sha1(data) + data + padding`` to 255 bytes, raised to ``e``
without any RSA padding (not the newer RSA_PAD); :meth:`RsaKey.decrypt` is its inverse.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pyrogram.raw.core.primitives import Bytes

KEY_BITS = 2048
PUBLIC_EXPONENT = 65537


def _int_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def fingerprint(modulus: int, exponent: int) -> int:
    """Telegram's key fingerprint: the low 64 bits of SHA1 of the TL-serialized (n, e), signed."""
    digest = hashlib.sha1(Bytes(_int_bytes(modulus)) + Bytes(_int_bytes(exponent))).digest()
    return int.from_bytes(digest[-8:], "little", signed=True)


@dataclass(frozen=True, slots=True)
class PublicKeyNumbers:
    modulus: int
    exponent: int

    @property
    def fingerprint(self) -> int:
        return fingerprint(self.modulus, self.exponent)

    @classmethod
    def from_pem(cls, pem: str) -> PublicKeyNumbers:
        """Read a PEM public key (``BEGIN PUBLIC KEY`` or ``BEGIN RSA PUBLIC KEY``)."""
        key = serialization.load_pem_public_key(pem.encode())
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("not an RSA public key")
        numbers = key.public_numbers()
        return cls(numbers.n, numbers.e)


class RsaKey:
    """A private RSA key of the simulated Telegram, with the raw (unpadded) decryption it needs."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._key = private_key
        numbers = private_key.private_numbers()
        self._d = numbers.d
        self.public = PublicKeyNumbers(numbers.public_numbers.n, numbers.public_numbers.e)

    @classmethod
    def generate(cls) -> RsaKey:
        return cls(rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS))

    @classmethod
    def from_pem(cls, pem: str) -> RsaKey:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return cls(key)

    @property
    def fingerprint(self) -> int:
        return self.public.fingerprint

    @property
    def public_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            .decode()
        )

    @property
    def private_pem(self) -> str:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Raw RSA: the 255-byte ``sha1 + data + padding`` block the client raised to ``e``."""
        value = int.from_bytes(ciphertext, "big")
        if value >= self.public.modulus:
            raise ValueError("ciphertext out of range")
        return pow(value, self._d, self.public.modulus).to_bytes(255, "big")
