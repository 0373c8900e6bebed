"""Who may do what: Django model permissions, per action.

- reading (GET): ``view_<model>`` of the view's model (scan tasks, pools, scanners);
- submitting a scan: ``tasks.add_scantask``;
- cancelling and retrying: ``tasks.change_scantask``.

A read-only token may only read, whatever its user may do. Views name their needs in
``required_permissions`` (action → permissions); otherwise the model's view/add permission applies. A POST that
stores nothing (checking an upload) is a read: its view lists the action in ``read_actions``.
"""

from __future__ import annotations

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from tasks.models import ApiToken


def _model_perm(view, action: str) -> list[str]:
    queryset = getattr(view, "queryset", None)
    if queryset is None:
        return []
    meta = queryset.model._meta
    return [f"{meta.app_label}.{action}_{meta.model_name}"]


NOT_AUTHENTICATED = "authentication required: send 'Authorization: Token <key>' (manage.py create_api_token)"


class Authenticated(permissions.BasePermission):
    """Any logged-in user or token (the schema and its Swagger UI), with the API's hint when there is none."""

    def has_permission(self, request: Request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            raise exceptions.NotAuthenticated(NOT_AUTHENTICATED)
        return True


class ModelPermission(permissions.BasePermission):
    def has_permission(self, request: Request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            raise exceptions.NotAuthenticated(NOT_AUTHENTICATED)
        safe = request.method in permissions.SAFE_METHODS
        action = getattr(view, "action", None) or ("read" if safe else request.method.lower())
        reads = safe or action in getattr(view, "read_actions", ())
        if isinstance(request.auth, ApiToken) and request.auth.read_only and not reads:
            raise exceptions.PermissionDenied(f"token {request.auth.name!r} is read-only: use a token that may write")
        needed = getattr(view, "required_permissions", {}).get(action)
        if needed is None:
            needed = _model_perm(view, "view" if safe else "add")
        missing = [p for p in needed if not request.user.has_perm(p)]
        if missing:
            raise exceptions.PermissionDenied(
                f"user {request.user.get_username()!r} lacks the permission {missing[0]!r}: "
                "ask an administrator to grant it (admin > Users or Groups)")
        return True
