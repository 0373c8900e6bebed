"""Token authentication for API clients: ``Authorization: Token <key>`` (or ``Bearer <key>``).

Keys are looked up by their public prefix and compared by hash (tasks.models.ApiToken); a key is
never logged or echoed, not even in an error message.
"""

from __future__ import annotations

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tasks.models import ApiToken

KEYWORDS = (b"token", b"bearer")


WWW_AUTHENTICATE = 'Token realm="api"'  # the challenge of every 401


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "malformed Authorization header: send 'Authorization: Token <key>' with the key and nothing else")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("the API token contains invalid characters") from None
        token = ApiToken.find(key)
        if token is None:
            raise exceptions.AuthenticationFailed(
                "invalid or revoked API token: create a new one (admin > API tokens, or manage.py create_api_token)")
        token.touch()
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


try:  # the schema's security scheme for this authenticator (drf-spectacular)
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class ApiTokenScheme(OpenApiAuthenticationExtension):
        target_class = "tasks.api.auth.ApiTokenAuthentication"
        name = "ApiToken"

        def get_security_definition(self, auto_schema):
            return {"type": "apiKey", "in": "header", "name": "Authorization",
                    "description": "`Token <key>` (or `Bearer <key>`); create one with manage.py create_api_token"}
except ImportError:  # pragma: no cover
    pass
