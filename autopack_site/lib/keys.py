"""RS256 signing keys for the API's JSON Web Tokens.

Production points ``JWT_PRIVATE_KEY_FILE`` at a PEM file shared by every API host (optionally
``JWT_PUBLIC_KEY_FILE``; by default the public key is derived). Without one, a key pair is generated
into the data directory on first use, so a development checkout needs no setup; every process that
shares the data directory then signs with the same key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_BITS = 2048
PRIVATE_KEY_NAME = "jwt-private.pem"


@dataclass(frozen=True)
class SigningKeys:
    private_pem: str
    public_pem: str

    @property
    def kid(self) -> str:
        return jwk_thumbprint(public_jwk_fields(self.public_pem))


def generate_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem_from_private(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the JWT signing key must be an RSA private key")
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _write_private_key_once(path: Path) -> None:
    """Create the key file atomically and readable by the owner only; a concurrent creator wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(generate_private_pem())
    try:
        # link() fails if the file exists, so two processes starting together end up with one key.
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def load_signing_keys(*, data_dir: Path, private_key_file: str = "", public_key_file: str = "") -> SigningKeys:
    if private_key_file:
        private_pem = Path(private_key_file).read_text()
    else:
        generated = data_dir / PRIVATE_KEY_NAME
        if not generated.exists():
            _write_private_key_once(generated)
        private_pem = generated.read_text()
    public_pem = Path(public_key_file).read_text() if public_key_file else public_pem_from_private(private_pem)
    return SigningKeys(private_pem=private_pem, public_pem=public_pem)


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk_fields(public_pem: str) -> dict[str, str]:
    key = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the JWT verifying key must be an RSA public key")
    numbers = key.public_numbers()
    return {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}


def jwk_thumbprint(fields: dict[str, str]) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members, sorted, without whitespace."""
    canonical = json.dumps({name: fields[name] for name in ("e", "kty", "n")}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def jwks(public_pem: str) -> dict[str, list[dict[str, str]]]:
    """The JSON Web Key Set that lets other services verify Autopack's tokens."""
    fields = public_jwk_fields(public_pem)
    return {"keys": [{**fields, "use": "sig", "alg": "RS256", "kid": jwk_thumbprint(fields)}]}
