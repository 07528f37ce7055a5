from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.tokens import tokens_issue
from tests.factories import make_user

pytestmark = pytest.mark.django_db

ME = "/api/auth/me"


def _login(username: str = "alice", password: str = "pw-for-tests"):
    return APIClient().post("/api/auth/login", {"username": username, "password": password}, format="json")


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _refresh(token: str):
    return APIClient().post("/api/auth/refresh", {"refresh": token}, format="json")


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_login_returns_an_rs256_access_token_valid_for_at_most_five_minutes():
    make_user("alice")
    response = _login()
    assert response.status_code == 200
    body = response.json()
    assert jwt.get_unverified_header(body["access"])["alg"] == "RS256"
    claims = _claims(body["access"])
    assert claims["exp"] - claims["iat"] <= 300
    assert body["access_expires_in"] <= 300
    assert _bearer(body["access"]).get(ME).json()["username"] == "alice"


def test_a_wrong_password_is_refused_without_saying_whether_the_user_exists():
    make_user("alice")
    wrong_password = _login(password="nope").json()
    no_such_user = _login(username="nobody").json()
    assert wrong_password == no_such_user
    assert wrong_password["error"]["code"] == "invalid_credentials"


def test_an_hs256_token_signed_with_the_secret_key_is_refused():
    user = make_user("alice")
    claims = _claims(tokens_issue(user=user)["access"])
    forged = jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256")
    assert _bearer(forged).get(ME).status_code == 401


def test_an_hs256_token_signed_with_the_public_key_is_refused():
    user = make_user("alice")
    claims = _claims(tokens_issue(user=user)["access"])
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signing_input = header + b"." + payload
    key = settings.SIMPLE_JWT["VERIFYING_KEY"].encode()
    signature = base64.urlsafe_b64encode(hmac.new(key, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    forged = (signing_input + b"." + signature).decode()
    assert _bearer(forged).get(ME).status_code == 401


def test_an_unsigned_none_token_is_refused():
    user = make_user("alice")
    claims = _claims(tokens_issue(user=user)["access"])
    forged = jwt.encode(claims, None, algorithm="none")
    assert _bearer(forged).get(ME).status_code == 401
    assert _refresh(forged).status_code == 401


def test_a_token_signed_by_another_rsa_key_is_refused():
    from autopack_site.lib.keys import generate_private_pem

    user = make_user("alice")
    claims = _claims(tokens_issue(user=user)["access"])
    forged = jwt.encode(claims, generate_private_pem(), algorithm="RS256")
    assert _bearer(forged).get(ME).status_code == 401


def test_refresh_rotates_and_the_old_refresh_token_is_refused():
    make_user("alice")
    first = _login().json()
    rotated = _refresh(first["refresh"])
    assert rotated.status_code == 200
    assert rotated.json()["refresh"] != first["refresh"]
    replay = _refresh(first["refresh"])
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "token_not_valid"
    assert _refresh(rotated.json()["refresh"]).status_code == 200


def test_an_expired_refresh_token_is_refused():
    user = make_user("alice")
    token = RefreshToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    assert _refresh(str(token)).status_code == 401


def test_an_access_token_cannot_be_used_to_refresh():
    make_user("alice")
    assert _refresh(_login().json()["access"]).status_code == 401


def test_logout_blacklists_the_refresh_token():
    make_user("alice")
    tokens = _login().json()
    assert APIClient().post("/api/auth/logout", {"refresh": tokens["refresh"]}, format="json").status_code == 204
    assert _refresh(tokens["refresh"]).status_code == 401


def test_an_inactive_user_is_refused_at_refresh_and_with_an_access_token():
    user = make_user("alice")
    tokens = _login().json()
    user.is_active = False
    user.save()
    response = _refresh(tokens["refresh"])
    assert response.status_code == 401
    assert _bearer(tokens["access"]).get(ME).status_code == 401


def test_a_deleted_user_is_refused_at_refresh():
    user = make_user("alice")
    tokens = _login().json()
    user.delete()
    assert _refresh(tokens["refresh"]).status_code == 401


def test_changing_the_password_revokes_existing_tokens():
    user = make_user("alice")
    tokens = _login().json()
    user.set_password("a-new-long-password-123")
    user.save()
    assert _refresh(tokens["refresh"]).status_code == 401
    assert _bearer(tokens["access"]).get(ME).status_code == 401


def test_tokens_verify_against_the_published_jwks():
    make_user("alice")
    access = _login().json()["access"]
    jwks = APIClient().get("/api/auth/.well-known/jwks.json").json()
    [key] = jwks["keys"]
    assert key["alg"] == "RS256" and key["use"] == "sig" and key["kty"] == "RSA"
    public_key = jwt.PyJWK(key).key
    claims = jwt.decode(access, public_key, algorithms=["RS256"], audience="autopack-api", issuer="autopack")
    assert claims["token_type"] == "access"


def test_error_bodies_never_echo_the_token():
    forged = jwt.encode({"user_id": 1}, "x" * 32, algorithm="HS256")
    response = _bearer(forged).get(ME)
    assert forged not in response.content.decode()
    refresh = _refresh(forged)
    assert forged not in refresh.content.decode()
