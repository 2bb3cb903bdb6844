"""How a client app proves who it is: its key and secret, or an HMAC-SHA256 signature.

Bearer:   ``Authorization: Bearer <api_key>:<api_secret>``
HMAC:     ``Authorization: WEFT-HMAC-SHA256 Credential=<api_key>, Signature=<base64>``
          with ``X-Weft-Date`` (or ``Date``; an HTTP date, within 5 minutes of the server's clock)
          and ``X-Weft-Nonce`` (8–64 characters, never used twice by the same app). The signature is
          HMAC-SHA256 with the app secret over these lines joined by ``\\n``:
          method, path with query string, the date header's value, the nonce, hex SHA-256 of the body.
"""

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from .models import App
from .nonces import nonce_claim

SIGNATURE_WINDOW = timedelta(minutes=5)
HMAC_SCHEME = "WEFT-HMAC-SHA256"
_HMAC_PARAMS = re.compile(r"^\s*Credential=([^,\s]+)\s*,\s*Signature=([A-Za-z0-9+/=]+)\s*$")
_NONCE = re.compile(r"^[A-Za-z0-9._~-]{8,64}$")


@dataclass(frozen=True)
class AppPrincipal:
    """``request.user`` for a call made by a client app (``request.auth`` is the App)."""

    app: App

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    @property
    def pk(self):
        return None

    def __str__(self) -> str:
        return f"app:{self.app.alias_id}"


class ReplayedNonce(exceptions.APIException):
    status_code = 409
    default_detail = "This nonce was already used; sign every request with a fresh one."
    default_code = "replayed_nonce"


def string_to_sign(*, method: str, path: str, date: str, nonce: str, body: bytes) -> bytes:
    return "\n".join([method.upper(), path, date, nonce, hashlib.sha256(body).hexdigest()]).encode()


def sign(*, secret: str, method: str, path: str, date: str, nonce: str, body: bytes) -> str:
    """The signature a client sends; the server computes the same to compare."""
    digest = hmac.new(
        secret.encode(), string_to_sign(method=method, path=path, date=date, nonce=nonce, body=body), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


DATE_HEADER = "X-Weft-Date"
NONCE_HEADER = "X-Weft-Nonce"


def signing_time_problem(*, date: str, nonce: str) -> tuple[str, str] | None:
    """What is wrong with a signed request's date (an HTTP date within the window) or nonce, as
    ``(header, message)``; None when both are right. The app API and webhook triggers sign alike."""
    try:
        signed_at = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return DATE_HEADER, f"Send the signing time in {DATE_HEADER} as an HTTP date."
    if signed_at.tzinfo is None or abs(timezone.now() - signed_at) > SIGNATURE_WINDOW:
        return DATE_HEADER, "The signature's date is outside the 5-minute window."
    if not _NONCE.match(nonce):
        return NONCE_HEADER, f"Send {NONCE_HEADER}: 8 to 64 letters, digits or ._~- characters."
    return None


def _refuse(message: str) -> exceptions.AuthenticationFailed:
    return exceptions.AuthenticationFailed(message, code="bad_credentials")


def _app_for_key(request, api_key: str) -> App:
    """The app with this key: from the call's ``weft_access`` (``licensing.access``) if it has one."""
    access = getattr(request, "weft_access", None)
    try:
        if access is not None:
            return access.app(api_key)
        return App.objects.get(api_key=api_key)  # unique: no ordering to compile, as first() would
    except App.DoesNotExist:
        raise _refuse("Unknown app key or wrong secret.") from None


def _enabled(app: App) -> App:
    """Whether the app is disabled is told only to a caller who proved they hold its secret."""
    if not app.is_enabled:
        raise _refuse("This app is disabled.")
    return app


class AppCredentialsAuthentication(BaseAuthentication):
    """Authenticates client apps; user tokens and sessions are not accepted on the app API."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, params = header.partition(" ")
        if scheme.lower() == "bearer":
            return self._bearer(request, params.strip())
        if scheme.upper() == HMAC_SCHEME:
            return self._hmac(request, params)
        return None

    def authenticate_header(self, request):
        return f'Bearer realm="apps", {HMAC_SCHEME}'

    def _bearer(self, request, credentials: str):
        api_key, sep, secret = credentials.partition(":")
        if not sep or not api_key or not secret or len(api_key) > 50 or len(secret) > 256:
            raise _refuse("Use Authorization: Bearer <api_key>:<api_secret>.")
        app = _app_for_key(request, api_key)
        if not hmac.compare_digest(app.api_secret.encode(), secret.encode()):
            raise _refuse("Unknown app key or wrong secret.")
        return AppPrincipal(app), _enabled(app)

    def _hmac(self, request, params: str):
        match = _HMAC_PARAMS.match(params)
        if not match:
            raise _refuse(f"Use Authorization: {HMAC_SCHEME} Credential=<api_key>, Signature=<base64>.")
        api_key, signature = match.groups()
        date = request.META.get("HTTP_X_WEFT_DATE") or request.META.get("HTTP_DATE") or ""
        nonce = request.META.get("HTTP_X_WEFT_NONCE", "")
        problem = signing_time_problem(date=date, nonce=nonce)
        if problem is not None:
            raise _refuse(problem[1])
        app = _app_for_key(request, api_key)
        expected = sign(
            secret=app.api_secret,
            method=request.method,
            path=request.get_full_path(),
            date=date,
            nonce=nonce,
            body=request.body,
        )
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise _refuse("The signature does not match this request.")
        _enabled(app)
        # Claimed only once the signature is valid, so that nobody can burn another app's nonces.
        if not nonce_claim(app=app, nonce=nonce, ttl=SIGNATURE_WINDOW * 2):
            raise ReplayedNonce()
        return AppPrincipal(app), app


class AppCredentialsScheme(OpenApiAuthenticationExtension):
    target_class = "licensing.authentication.AppCredentialsAuthentication"
    name = "appCredentials"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "`Bearer <api_key>:<api_secret>`, or the WEFT-HMAC-SHA256 signature scheme.",
        }
