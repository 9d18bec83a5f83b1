"""Optional JWT signature verification for ``jwt:`` user IDs, with the standard library only.

Off by default (the app is trusted to have authenticated its tokens). Configured with
``USAGELOG_JWT_KEY`` / ``USAGELOG_JWT_KEY_FILE`` (an HS256/384/512 shared secret, or a PEM
public key: RSA for RS256/384/512, EC P-256 for ES256) and/or ``USAGELOG_JWT_JWKS`` (a JWKS
file path or ``http(s)://`` URL). A token verifies when its ``alg`` fits a configured key (the
token's ``kid`` picks among JWKS keys), its signature is valid, and ``exp``/``nbf`` hold with
60 s of leeway; ``alg: none`` never does. Verification runs in the background thread that
builds events, and its result is cached per token, so the RSA and ECDSA arithmetic here (a few
milliseconds in pure Python) is paid once per token, never on the request path. A JWKS URL is
fetched there too, cached for an hour and re-fetched at most once a minute for an unknown ``kid``.

The in-app part stays light: no cryptography package is needed. The RSA (PKCS#1 v1.5) and
ECDSA checks only verify public signatures, so constant-time arithmetic is not required.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

_logger = logging.getLogger("usagelog")

LEEWAY_SECONDS = 60
JWKS_TTL_SECONDS = 3600.0
JWKS_RETRY_SECONDS = 60.0
JWKS_FETCH_TIMEOUT = 5.0
JWKS_MAX_BYTES = 1 << 20

_HASHES = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
_DIGEST_INFO = {  # DER prefix of PKCS#1 v1.5 DigestInfo, per hash
    "256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_OID_RSA = bytes.fromhex("2a864886f70d010101")
_OID_EC = bytes.fromhex("2a8648ce3d0201")
_OID_P256 = bytes.fromhex("2a8648ce3d030107")

# NIST P-256 (FIPS 186-4, D.1.2.3).
_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_A = _P - 3
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)


@dataclass(frozen=True)
class Key:
    kind: str  # "oct", "RSA" or "EC"
    secret: bytes = b""
    n: int = 0  # RSA modulus
    e: int = 0  # RSA exponent
    x: int = 0  # EC point
    y: int = 0
    kid: str = ""
    alg: str = ""  # a JWK's declared algorithm ("" any fitting one)

    def fits(self, alg: str) -> bool:
        if self.alg and self.alg != alg:
            return False
        family = {"oct": "HS", "RSA": "RS", "EC": "ES"}[self.kind]
        return alg[:2] == family and (alg[2:] in _HASHES if family != "ES" else alg == "ES256")


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _uint(segment: str) -> int:
    return int.from_bytes(_b64url(segment), "big")


# -- DER, just enough for public keys ------------------------------------------------------------


def _der(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, position after) of the DER element at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos : pos + length], pos + length


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    items, pos = [], 0
    while pos < len(data):
        tag, content, pos = _der(data, pos)
        items.append((tag, content))
    return items


def _rsa_public_key(der: bytes) -> Key:
    (_, seq), *_ = _der_items(der)
    n, e = (int.from_bytes(content, "big") for _, content in _der_items(seq)[:2])
    return Key("RSA", n=n, e=e)


def _pem_key(text: str) -> Key:
    lines = [line.strip() for line in text.strip().splitlines()]
    label = lines[0]
    der = base64.b64decode("".join(line for line in lines[1:] if not line.startswith("-----")))
    if "RSA PUBLIC KEY" in label:
        return _rsa_public_key(der)
    if "PUBLIC KEY" not in label:
        raise ValueError("a PEM key must be a PUBLIC KEY (never give usagelog a private key)")
    (_, info), *_ = _der_items(der)
    (_, algorithm), (_, bits) = _der_items(info)[:2]
    oids = [content for tag, content in _der_items(algorithm) if tag == 0x06]
    point = bits[1:]  # BIT STRING: first byte is the count of unused bits
    if oids[:1] == [_OID_RSA]:
        return _rsa_public_key(point)
    if oids == [_OID_EC, _OID_P256] and len(point) == 65 and point[0] == 4:
        return _ec_key(int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))
    raise ValueError("unsupported public key (RSA or EC P-256 expected)")


def _ec_key(x: int, y: int, kid: str = "", alg: str = "") -> Key:
    if (y * y - x * x * x - _A * x - _B) % _P != 0:
        raise ValueError("EC point is not on P-256")
    return Key("EC", x=x, y=y, kid=kid, alg=alg)


def parse_key(text: str) -> list[Key]:
    """The keys of a ``USAGELOG_JWT_KEY`` value; ``ValueError`` (never quoting it) if unusable."""
    if not text.strip():
        raise ValueError("empty key")
    if text.lstrip().startswith("-----BEGIN"):
        try:
            return [_pem_key(text)]
        except (ValueError, IndexError, binascii.Error) as exc:
            raise ValueError(f"unreadable PEM public key: {exc}") from None
    return [Key("oct", secret=text.encode())]


def parse_jwks(document: Any) -> list[Key]:
    keys: list[Key] = []
    for jwk in document.get("keys", []) if isinstance(document, dict) else []:
        try:
            kid, alg, kty = str(jwk.get("kid", "")), str(jwk.get("alg", "")), jwk.get("kty")
            if jwk.get("use", "sig") != "sig":
                continue
            if kty == "RSA":
                keys.append(Key("RSA", n=_uint(jwk["n"]), e=_uint(jwk["e"]), kid=kid, alg=alg))
            elif kty == "EC" and jwk.get("crv") == "P-256":
                keys.append(_ec_key(_uint(jwk["x"]), _uint(jwk["y"]), kid, alg))
            elif kty == "oct":
                keys.append(Key("oct", secret=_b64url(jwk["k"]), kid=kid, alg=alg))
        except (KeyError, TypeError, ValueError, binascii.Error, AttributeError):
            _logger.warning("usagelog: USAGELOG_JWT_JWKS: skipping an unreadable key")
    return keys


# -- signatures ----------------------------------------------------------------------------------


def _ec_add(p: tuple[int, int] | None, q: tuple[int, int] | None) -> tuple[int, int] | None:
    if p is None:
        return q
    if q is None:
        return p
    if p[0] == q[0]:
        if (p[1] + q[1]) % _P == 0:
            return None
        slope = (3 * p[0] * p[0] + _A) * pow(2 * p[1], -1, _P) % _P
    else:
        slope = (q[1] - p[1]) * pow(q[0] - p[0], -1, _P) % _P
    x = (slope * slope - p[0] - q[0]) % _P
    return x, (slope * (p[0] - x) - p[1]) % _P


def _ecdsa_p256(key: Key, message: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (0 < r < _N and 0 < s < _N):
        return False
    w = pow(s, -1, _N)
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    u1, u2 = e * w % _N, r * w % _N
    # Shamir's trick: u1*G + u2*Q in one pass over the bits.
    q = (key.x, key.y)
    both = _ec_add(_G, q)
    point: tuple[int, int] | None = None
    for bit in range(max(u1.bit_length(), u2.bit_length()) - 1, -1, -1):
        point = _ec_add(point, point)
        pick = ((u1 >> bit) & 1, (u2 >> bit) & 1)
        if pick == (1, 1):
            point = _ec_add(point, both)
        elif pick == (1, 0):
            point = _ec_add(point, _G)
        elif pick == (0, 1):
            point = _ec_add(point, q)
    return point is not None and point[0] % _N == r


def _rsa_pkcs1(key: Key, bits: str, message: bytes, signature: bytes) -> bool:
    size = (key.n.bit_length() + 7) // 8
    if len(signature) != size or size < 128:  # RSA keys under 1024 bits are not accepted
        return False
    value = int.from_bytes(signature, "big")
    if value >= key.n:
        return False
    encoded = pow(value, key.e, key.n).to_bytes(size, "big")
    suffix = _DIGEST_INFO[bits] + _HASHES[bits](message).digest()
    expected = b"\x00\x01" + b"\xff" * (size - len(suffix) - 3) + b"\x00" + suffix
    return hmac.compare_digest(encoded, expected)


def check_signature(key: Key, alg: str, message: bytes, signature: bytes) -> bool:
    if not key.fits(alg):
        return False
    if key.kind == "oct":
        mac = hmac.new(key.secret, message, _HASHES[alg[2:]]).digest()
        return hmac.compare_digest(mac, signature)
    if key.kind == "RSA":
        return _rsa_pkcs1(key, alg[2:], message, signature)
    return _ecdsa_p256(key, message, signature)


# -- the verifier --------------------------------------------------------------------------------


class JwtVerifier:
    """Verifies compact JWTs against the configured keys (see the module docstring)."""

    def __init__(self, key: str = "", key_file: str = "", jwks: str = "") -> None:
        self.keys: list[Key] = []
        if key:
            self.keys += parse_key(key)
        if key_file:
            with open(key_file, encoding="utf-8") as f:
                # A secret written with `echo` ends with a newline that is not part of it.
                self.keys += parse_key(f.read().rstrip("\r\n"))
        self.jwks_source = jwks
        self._jwks: list[Key] = []
        self._jwks_loaded_at = float("-inf")
        self._jwks_tried_at = float("-inf")

    def _jwks_keys(self, kid: str) -> list[Key]:
        if not self.jwks_source:
            return []
        now = time.monotonic()
        stale = now - self._jwks_loaded_at > JWKS_TTL_SECONDS
        unknown = bool(kid) and not any(k.kid == kid for k in self._jwks)
        if (stale or unknown) and now - self._jwks_tried_at > JWKS_RETRY_SECONDS:
            self._jwks_tried_at = now
            try:
                self._jwks = parse_jwks(json.loads(self._read_jwks()))
                self._jwks_loaded_at = now
            except (OSError, ValueError) as exc:
                _logger.warning("usagelog: cannot read USAGELOG_JWT_JWKS %s: %s", self.jwks_source, exc)
        return self._jwks

    def _read_jwks(self) -> bytes:
        source = self.jwks_source
        if source.startswith(("http://", "https://")):
            with urllib.request.urlopen(source, timeout=JWKS_FETCH_TIMEOUT) as response:
                return bytes(response.read(JWKS_MAX_BYTES))
        with open(source, "rb") as f:
            return f.read(JWKS_MAX_BYTES)

    def verify(self, token: str) -> dict[str, Any] | None:
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = json.loads(_b64url(header_b64))
            payload = json.loads(_b64url(payload_b64))
            signature = _b64url(signature_b64)
        except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(header, dict) or not isinstance(payload, dict):
            return None
        alg, kid = str(header.get("alg", "")), str(header.get("kid", ""))
        if alg.lower() == "none":
            return None
        message = f"{header_b64}.{payload_b64}".encode("ascii", "replace")
        candidates = [k for k in self.keys + self._jwks_keys(kid) if not kid or not k.kid or k.kid == kid]
        if not any(check_signature(k, alg, message, signature) for k in candidates):
            return None
        now = time.time()
        try:
            if "exp" in payload and float(payload["exp"]) + LEEWAY_SECONDS < now:
                return None
            if "nbf" in payload and float(payload["nbf"]) - LEEWAY_SECONDS > now:
                return None
        except (TypeError, ValueError):
            return None
        return payload
