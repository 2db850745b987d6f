"""The server half of MTProto's auth key exchange (core.telegram.org/mtproto/auth_key).

``req_pq_multi`` -> ``resPQ`` (pq to factor, our RSA fingerprint); ``req_DH_params`` (RSA-encrypted
``p_q_inner_data``) -> ``server_DH_params_ok`` (AES-IGE-encrypted ``server_DH_inner_data`` with g_a);
``set_client_DH_params`` (g_b) -> ``dh_gen_ok``. Both sides then hold ``g^(ab) mod dh_prime``: a
real 2048-bit auth key, as Telegram would have made. One :class:`Handshake` per connection; the CPU
work (RSA, two 2048-bit powers) is meant to run off the event loop.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import tgcrypto
from pyrogram import raw
from pyrogram.crypto import prime
from pyrogram.raw.core import TLObject

from streambot.simulator.wire.rsa import RsaKey

DH_PRIME = prime.CURRENT_DH_PRIME
DH_G = 3
#: 2^(2048-64): Telegram's bound on g_a and g_b (security guidelines).
_DH_MARGIN = 1 << (2048 - 64)


class HandshakeError(Exception):
    """The client's half of the exchange does not add up; the connection is closed."""


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3,317,044,064,679,887,385,961,981 (enough for 32 bits)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n in small:
        return True
    if any(n % p == 0 for p in small):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def random_prime(rng: random.Random, bits: int = 31) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        if is_prime(candidate):
            return candidate


def tmp_aes(new_nonce: bytes, server_nonce: bytes) -> tuple[bytes, bytes]:
    """The temporary AES key and IV that protect the DH parameters (from the two nonces)."""
    key = (
        hashlib.sha1(new_nonce + server_nonce).digest()
        + hashlib.sha1(server_nonce + new_nonce).digest()[:12]
    )
    iv = (
        hashlib.sha1(server_nonce + new_nonce).digest()[12:]
        + hashlib.sha1(new_nonce + new_nonce).digest()
        + new_nonce[:4]
    )
    return key, iv


def _nonce_bytes(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little", signed=True)


@dataclass(slots=True)
class AuthKeyResult:
    auth_key: bytes
    server_salt: int


class Handshake:
    """State of one client's key exchange; :meth:`answer` maps each request to its answer."""

    def __init__(self, rsa_key: RsaKey, *, rng: random.Random | None = None) -> None:
        self._rsa = rsa_key
        self._rng = rng or random.SystemRandom()
        self._nonce: int | None = None
        self._server_nonce = int.from_bytes(os.urandom(16), "little", signed=True)
        self._p = self._q = 0
        self._new_nonce = b""
        self._a = 0
        self._tmp: tuple[bytes, bytes] = (b"", b"")
        self.result: AuthKeyResult | None = None

    def answer(self, request: Any) -> TLObject[Any]:
        if isinstance(request, raw.functions.ReqPqMulti | raw.functions.ReqPq):
            return self._res_pq(request)
        if isinstance(request, raw.functions.ReqDHParams):
            return self._dh_params(request)
        if isinstance(request, raw.functions.SetClientDHParams):
            return self._dh_gen(request)
        raise HandshakeError(f"unexpected {type(request).__name__} before an auth key exists")

    def _check_nonces(self, request: Any) -> int:
        """The client nonce, once the request proves it continues this exchange."""
        if self._nonce is None or request.nonce != self._nonce:
            raise HandshakeError("nonce mismatch")
        if request.server_nonce != self._server_nonce:
            raise HandshakeError("server nonce mismatch")
        return self._nonce

    def _res_pq(self, request: Any) -> TLObject[Any]:
        self._nonce = request.nonce
        p, q = random_prime(self._rng), random_prime(self._rng)
        while q == p:
            q = random_prime(self._rng)
        self._p, self._q = sorted((p, q))
        return raw.types.ResPQ(
            nonce=request.nonce,
            server_nonce=self._server_nonce,
            pq=(self._p * self._q).to_bytes(8, "big"),
            server_public_key_fingerprints=[self._rsa.fingerprint],
        )

    def _dh_params(self, request: Any) -> TLObject[Any]:
        self._check_nonces(request)
        if request.public_key_fingerprint != self._rsa.fingerprint:
            raise HandshakeError("unknown RSA fingerprint")
        if (
            int.from_bytes(request.p, "big") != self._p
            or int.from_bytes(request.q, "big") != self._q
        ):
            raise HandshakeError("wrong factorisation of pq")
        block = self._rsa.decrypt(request.encrypted_data)
        inner = TLObject.read(BytesIO(block[20:]))
        if not isinstance(inner, raw.types.PQInnerData | raw.types.PQInnerDataDc):
            raise HandshakeError("p_q_inner_data expected")
        if hashlib.sha1(inner.write()).digest() != block[:20]:
            raise HandshakeError("p_q_inner_data hash mismatch")
        if inner.nonce != self._nonce or inner.server_nonce != self._server_nonce:
            raise HandshakeError("nonce mismatch in p_q_inner_data")
        self._new_nonce = _nonce_bytes(inner.new_nonce, 32)
        self._tmp = tmp_aes(self._new_nonce, _nonce_bytes(self._server_nonce, 16))
        while True:
            self._a = int.from_bytes(os.urandom(256), "big")
            g_a = pow(DH_G, self._a, DH_PRIME)
            if _DH_MARGIN < g_a < DH_PRIME - _DH_MARGIN:
                break
        answer = raw.types.ServerDHInnerData(
            nonce=self._nonce,
            server_nonce=self._server_nonce,
            g=DH_G,
            dh_prime=DH_PRIME.to_bytes(256, "big"),
            g_a=g_a.to_bytes(256, "big"),
            server_time=int(time.time()),
        ).write()
        with_hash = hashlib.sha1(answer).digest() + answer
        with_hash += os.urandom(-len(with_hash) % 16)
        return raw.types.ServerDHParamsOk(
            nonce=self._nonce,
            server_nonce=self._server_nonce,
            encrypted_answer=tgcrypto.ige256_encrypt(with_hash, *self._tmp),
        )

    def _dh_gen(self, request: Any) -> TLObject[Any]:
        nonce = self._check_nonces(request)
        if not self._new_nonce:
            raise HandshakeError("set_client_DH_params before req_DH_params")
        block = tgcrypto.ige256_decrypt(request.encrypted_data, *self._tmp)
        inner = TLObject.read(BytesIO(block[20:]))
        if not isinstance(inner, raw.types.ClientDHInnerData):
            raise HandshakeError("client_DH_inner_data expected")
        if hashlib.sha1(inner.write()).digest() != block[:20]:
            raise HandshakeError("client_DH_inner_data hash mismatch")
        g_b = int.from_bytes(inner.g_b, "big")
        if not _DH_MARGIN < g_b < DH_PRIME - _DH_MARGIN:
            raise HandshakeError("g_b out of range")
        auth_key = pow(g_b, self._a, DH_PRIME).to_bytes(256, "big")
        aux_hash = hashlib.sha1(auth_key).digest()[:8]
        nonce_hash = hashlib.sha1(self._new_nonce + b"\x01" + aux_hash).digest()[-16:]
        server_nonce = _nonce_bytes(self._server_nonce, 16)
        salt = bytes(a ^ b for a, b in zip(self._new_nonce[:8], server_nonce[:8], strict=True))
        self.result = AuthKeyResult(auth_key, int.from_bytes(salt, "little", signed=True))
        return raw.types.DhGenOk(
            nonce=nonce,
            server_nonce=self._server_nonce,
            new_nonce_hash1=int.from_bytes(nonce_hash, "little", signed=True),
        )
