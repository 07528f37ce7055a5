"""RS256 key management (``autopack_site.lib.keys``)."""

from __future__ import annotations

import stat

import jwt

from autopack_site.lib.keys import PRIVATE_KEY_NAME, generate_private_pem, jwks, load_signing_keys


def test_a_development_key_pair_is_generated_once_into_the_data_directory(tmp_path):
    first = load_signing_keys(data_dir=tmp_path / "keys")
    second = load_signing_keys(data_dir=tmp_path / "keys")
    assert first == second
    key_file = tmp_path / "keys" / PRIVATE_KEY_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [path.name for path in (tmp_path / "keys").iterdir()] == [PRIVATE_KEY_NAME]


def test_a_configured_key_file_is_used_and_its_public_key_derived(tmp_path):
    key_file = tmp_path / "prod.pem"
    key_file.write_text(generate_private_pem())
    keys = load_signing_keys(data_dir=tmp_path / "unused", private_key_file=str(key_file))
    token = jwt.encode({"sub": "1"}, keys.private_pem, algorithm="RS256")
    assert jwt.decode(token, keys.public_pem, algorithms=["RS256"]) == {"sub": "1"}
    assert not (tmp_path / "unused").exists()


def test_the_jwks_carries_the_rfc7638_thumbprint_as_key_id(tmp_path):
    keys = load_signing_keys(data_dir=tmp_path)
    [key] = jwks(keys.public_pem)["keys"]
    assert key["kid"] == keys.kid
    assert set(key) == {"kty", "n", "e", "use", "alg", "kid"}
    assert key["e"] == "AQAB"
