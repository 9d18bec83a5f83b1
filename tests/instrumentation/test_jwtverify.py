"""Optional JWT verification: HS*, RS* and ES256 tokens signed by OpenSSL itself, keys given as a
secret, a PEM public key or a JWKS (file or URL); anything unverifiable gives no user ID."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from usagelog.instrumentation import jwtverify
from usagelog.instrumentation.jwtverify import JwtVerifier, parse_key
from usagelog.instrumentation.userid import UserResolver


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def uint(value: int) -> str:
    return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Signer:
    """Signs JWTs with a private key through the ``openssl`` command (the test's reference)."""

    def __init__(self, folder: Path, kind: str, name: str) -> None:
        self.private = folder / f"{name}.key"
        self.public = folder / f"{name}.pub"
        if kind == "rsa":
            command = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        else:
            command = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
        subprocess.run([*command, "-out", str(self.private)], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "pkey", "-in", str(self.private), "-pubout", "-out", str(self.public)],
            check=True,
            capture_output=True,
        )
        self.kind = kind
        self.alg = "RS256" if kind == "rsa" else "ES256"

    def token(self, claims: dict[str, Any], kid: str = "", alg: str = "") -> str:
        header: dict[str, Any] = {"alg": alg or self.alg, "typ": "JWT", **({"kid": kid} if kid else {})}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        digest = "-sha" + (alg or self.alg)[2:]
        signature = subprocess.run(
            ["openssl", "dgst", digest, "-sign", str(self.private)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        if self.kind == "ec":  # DER ECDSA-Sig-Value -> JWS r || s
            (_, seq), *_ = jwtverify._der_items(signature)
            r, s = (int.from_bytes(v, "big") for _, v in jwtverify._der_items(seq))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{b64(signature)}"

    def jwk(self, kid: str) -> dict[str, Any]:
        [key] = parse_key(self.public.read_text())
        if key.kind == "RSA":
            return {"kty": "RSA", "kid": kid, "n": uint(key.n), "e": uint(key.e)}
        return {"kty": "EC", "crv": "P-256", "kid": kid, "x": uint(key.x), "y": uint(key.y)}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Signer]:
    folder = tmp_path_factory.mktemp("jwt-keys")
    return {name: Signer(folder, name[:3].rstrip("2"), name) for name in ("rsa", "ec", "rsa2")}


def hs_token(
    claims: dict[str, Any], secret: bytes, alg: str = "HS256", header: dict[str, Any] | None = None
) -> str:
    head = b64(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return f"{head}.{body}.{b64(hmac.new(secret, f'{head}.{body}'.encode(), digest).digest())}"


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_tokens_verify_with_the_shared_secret_only(alg: str) -> None:
    verifier = JwtVerifier("s3cret")
    assert verifier.verify(hs_token({"sub": "a"}, b"s3cret", alg)) == {"sub": "a"}
    assert verifier.verify(hs_token({"sub": "a"}, b"other", alg)) is None


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_public_key_tokens_signed_by_openssl_verify(keys: dict[str, Signer], kind: str) -> None:
    signer = keys[kind]
    verifier = JwtVerifier(signer.public.read_text())
    good = signer.token({"sub": "alice"})
    assert verifier.verify(good) == {"sub": "alice"}
    head, _, sig = good.split(".")
    tampered_body = b64(json.dumps({"sub": "mallory"}).encode())
    assert verifier.verify(f"{head}.{tampered_body}.{sig}") is None
    assert verifier.verify(keys["rsa2"].token({"sub": "alice"})) is None  # another key's signature


def test_rsa_key_accepts_rs384_and_rs512_too(keys: dict[str, Signer]) -> None:
    verifier = JwtVerifier(keys["rsa"].public.read_text())
    for alg in ("RS384", "RS512"):
        assert verifier.verify(keys["rsa"].token({"sub": "a"}, alg=alg)) == {"sub": "a"}


def test_alg_none_and_algorithm_confusion_never_verify(keys: dict[str, Signer]) -> None:
    pem = keys["rsa"].public.read_text()
    verifier = JwtVerifier(pem)
    head = b64(b'{"alg":"none"}')
    assert verifier.verify(f"{head}.{b64(b'{}')}.") is None
    # HS256 "signed" with the public key's text as the secret: the classic confusion attack.
    assert verifier.verify(hs_token({"sub": "mallory"}, pem.encode())) is None


def test_expired_and_not_yet_valid_tokens_do_not_verify() -> None:
    verifier = JwtVerifier("k")
    now = int(time.time())
    assert verifier.verify(hs_token({"sub": "a", "exp": now - 3600}, b"k")) is None
    assert verifier.verify(hs_token({"sub": "a", "nbf": now + 3600}, b"k")) is None
    assert verifier.verify(hs_token({"sub": "a", "exp": now + 3600, "nbf": now - 10}, b"k")) is not None


def test_a_private_key_is_refused_as_configuration(keys: dict[str, Signer]) -> None:
    with pytest.raises(ValueError, match="PUBLIC KEY") as info:
        parse_key(keys["ec"].private.read_text())
    assert keys["ec"].private.read_text().splitlines()[1] not in str(info.value)


def test_jwks_file_picks_the_key_by_kid(keys: dict[str, Signer], tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [keys["rsa"].jwk("r1"), keys["ec"].jwk("e1")]}))
    verifier = JwtVerifier(jwks=str(jwks))
    assert verifier.verify(keys["rsa"].token({"sub": "r"}, kid="r1")) == {"sub": "r"}
    assert verifier.verify(keys["ec"].token({"sub": "e"}, kid="e1")) == {"sub": "e"}
    assert verifier.verify(keys["ec"].token({"sub": "e"}, kid="r1")) is None
    assert verifier.verify(keys["rsa2"].token({"sub": "x"}, kid="r1")) is None


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    served: dict[str, Any] = {"document": {"keys": []}, "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served["hits"] += 1
            body = json.dumps(served["document"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json", served
    finally:
        server.shutdown()
        server.server_close()


def test_jwks_url_is_fetched_once_and_cached(keys: dict[str, Signer], jwks_server: Any) -> None:
    url, served = jwks_server
    served["document"] = {"keys": [keys["ec"].jwk("k1")]}
    resolver = UserResolver(["jwt:sub"], JwtVerifier(jwks=url))
    for n in range(3):
        header = {"HTTP_AUTHORIZATION": "Bearer " + keys["ec"].token({"sub": f"user-{n}"}, kid="k1")}
        assert resolver.identify(header, None, 200) == (f"user-{n}", "")
    assert served["hits"] == 1


def test_unknown_kid_refetches_at_most_once_a_minute(keys: dict[str, Signer], jwks_server: Any) -> None:
    url, served = jwks_server
    served["document"] = {"keys": [keys["ec"].jwk("k1")]}
    verifier = JwtVerifier(jwks=url)
    assert verifier.verify(keys["ec"].token({"sub": "a"}, kid="k1")) is not None
    for _ in range(3):
        assert verifier.verify(keys["rsa"].token({"sub": "b"}, kid="rotated")) is None
    assert served["hits"] == 1  # the first fetch was just now: no refetch storm from unknown kids
    verifier._jwks_tried_at -= jwtverify.JWKS_RETRY_SECONDS + 1
    served["document"] = {"keys": [keys["ec"].jwk("k1"), keys["rsa"].jwk("rotated")]}
    assert verifier.verify(keys["rsa"].token({"sub": "b"}, kid="rotated")) == {"sub": "b"}
    assert served["hits"] == 2


def test_unreachable_jwks_means_no_verified_user_and_no_exception(keys: dict[str, Signer]) -> None:
    resolver = UserResolver(["jwt:sub"], JwtVerifier(jwks="http://127.0.0.1:9/none.json"))
    header = {"HTTP_AUTHORIZATION": "Bearer " + keys["ec"].token({"sub": "alice"}, kid="k1")}
    assert resolver.identify(header, None, 200) == ("", "alice")


def test_key_files_hold_a_pem_or_a_secret_without_its_trailing_newline(
    keys: dict[str, Signer], tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret\n")
    assert JwtVerifier(key_file=str(secret)).verify(hs_token({"sub": "a"}, b"s3cret")) == {"sub": "a"}
    verifier = JwtVerifier(key_file=str(keys["ec"].public))
    assert verifier.verify(keys["ec"].token({"sub": "e"})) == {"sub": "e"}
