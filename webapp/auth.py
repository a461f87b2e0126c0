"""Login and role checks for the web app.

Every Gradio event is also an HTTP endpoint, so the UI hiding a button protects nothing: each handler's first
line is `user = services.auth.require(request, *roles)`. Each event is wired with
`api_name=services.auth.endpoint("name", *roles)`, which records who may call it; the API tests read that
registry to try every admin endpoint as anonymous, viewer and reviewer.
"""

import gradio as gr

from feedback_db.models import User
from feedback_db.vocab import ADMIN, REVIEWER, ROLES

EVERYONE = ROLES
REVIEWERS = (ADMIN, REVIEWER)
ADMINS = (ADMIN,)


class PermissionDenied(gr.Error):
    """Raised by `require`; a gr.Error, so the browser shows the message and HTTP clients get it as the error."""


class Sessions:
    """Gradio's login sessions: its App keeps `tokens` (cookie value -> username) and names the cookies after
    `cookie_id`. This class is the one place that reads them (webapp/server.py attaches the mounted app)."""

    def __init__(self) -> None:
        self._app = None
        self._store = None

    def attach(self, gradio_app, store) -> None:
        self._app, self._store = gradio_app, store

    def cookie_names(self) -> list[str]:
        return [f"access-token-{self._app.cookie_id}", f"access-token-unsecure-{self._app.cookie_id}"]

    def username(self, cookies: dict[str, str]) -> str | None:
        if self._app is None:
            return None
        for name in self.cookie_names():
            if cookies.get(name) in self._app.tokens:
                return self._app.tokens[cookies[name]]
        return None

    def role(self, cookies: dict[str, str]) -> str | None:
        """The role of the session's user; None without a session or for a disabled (or deleted) user."""
        username = self.username(cookies)
        user = self._store.get_user(username) if username else None
        return None if user is None or user.disabled else user.role

    def end(self, username: str) -> int:
        """Log `username` out everywhere (disabling a user ends their sessions). Returns how many ended."""
        if self._app is None:
            return 0
        tokens = [token for token, name in list(self._app.tokens.items()) if name == username]
        for token in tokens:
            self._app.tokens.pop(token, None)
        return len(tokens)

    def end_request(self, cookies: dict[str, str]) -> None:
        """Log out the session these cookies belong to (and only that one)."""
        for name in self.cookie_names() if self._app is not None else []:
            self._app.tokens.pop(cookies.get(name), None)


class Auth:
    """Checks a request's logged-in user against the store; holds the endpoint → roles registry of one app."""

    def __init__(self, store) -> None:
        self.store = store
        self.endpoints: dict[str, tuple[str, ...]] = {}
        self.sessions = Sessions()  # replaced by webapp/server.py with the mounted app's

    def login(self, username: str, password: str) -> bool:
        """The `launch(auth=...)` callable: disabled users and wrong passwords are refused."""
        return self.store.authenticate(username, password) is not None

    def require(self, request: gr.Request | None, *roles: str) -> User:
        """Return the caller's user if their role is one of `roles`; raise PermissionDenied otherwise."""
        username = request.username if request is not None else None
        user = self.store.get_user(username) if username else None
        if user is None or user.disabled:
            raise PermissionDenied("Permission denied: please log in.")
        if user.role not in roles:
            raise PermissionDenied(f"Permission denied: {' or '.join(roles)} role required.")
        return user

    def endpoint(self, api_name: str, *roles: str) -> str:
        """Record who may call `api_name` and return it, for `api_name=` in an event listener."""
        if api_name in self.endpoints and self.endpoints[api_name] != roles:
            raise ValueError(f"Endpoint {api_name!r} registered twice with different roles.")
        self.endpoints[api_name] = roles
        return api_name

    def admin_only(self) -> list[str]:
        return sorted(name for name, roles in self.endpoints.items() if roles == ADMINS)
