"""HTTP guard: an ASGI middleware in front of the whole app (Gradio, its login and queue, the REST API).

- Cross-site request forgery: a state-changing request (POST, PUT, PATCH, DELETE) whose `Origin` (or, without
  one, `Referer`) is not one of the app's public origins is refused with 403. Browsers always send `Origin` on
  cross-origin POSTs; clients without either header are not browsers and carry no victim's cookies.
- Framing: `Content-Security-Policy: frame-ancestors 'self'` and `X-Frame-Options: SAMEORIGIN` on every response.
- Cookies: Gradio's session cookies are rewritten to `SameSite=Strict`.
- Uploads (`/gradio_api/upload`): admins only, a declared `Content-Length` no larger than `max_upload_bytes`,
  and refused once the upload folder holds `upload_quota_bytes`.
- The client address of the request is published in `CLIENT_ADDRESS` for the login throttle (Gradio calls the
  auth callable without the request).

    app.add_middleware(HttpGuard, origins=Origins("http://127.0.0.1:7860"), upload_user=sessions.user_role, ...)
"""

import contextvars
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLIENT_ADDRESS: contextvars.ContextVar[str] = contextvars.ContextVar("tuneloop_client_address", default="unknown")
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
UPLOAD_PATH = "/gradio_api/upload"
SECURITY_HEADERS = {"content-security-policy": "frame-ancestors 'self'", "x-frame-options": "SAMEORIGIN",
                    "x-content-type-options": "nosniff", "referrer-policy": "same-origin"}
_SAMESITE = re.compile(r";\s*samesite=\w+", re.IGNORECASE)


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, lower-cased, default ports dropped; None when it is not an http(s) URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    try:
        port = parts.port
    except ValueError:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


@dataclass(frozen=True)
class Origins:
    """The origins a browser may send state-changing requests from.

    With `--public-url` that URL's origin only. Without it, the bind address (`http://host:port`) and the origin
    of the request's own Host header (a page of this very server, whatever name the browser used to reach it)."""

    public: tuple[str, ...]
    same_host: bool = True

    def allows(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return False
        if origin in self.public:
            return True
        return self.same_host and host is not None and origin in (origin_of(f"http://{host}"),
                                                                  origin_of(f"https://{host}"))


def request_origin(headers: Headers) -> str | None | bool:
    """The origin a browser says the request came from: Origin, else Referer's; False when neither is sent."""
    if "origin" in headers:
        return origin_of(headers["origin"])  # "null" (sandboxed frames, file://) -> None: refused
    if "referer" in headers:
        return origin_of(headers["referer"])
    return False


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


class HttpGuard:
    def __init__(self, app: ASGIApp, origins: Origins, upload_role: Callable[[dict[str, str]], str | None],
                 upload_dir: Callable[[], Path], max_upload_bytes: int, upload_quota_bytes: int) -> None:
        self.app = app
        self.origins = origins
        self.upload_role = upload_role  # cookies -> the logged-in, enabled user's role (None: no such session)
        self.upload_dir = upload_dir
        self.max_upload_bytes = max_upload_bytes
        self.upload_quota_bytes = upload_quota_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope.get("client"):
            CLIENT_ADDRESS.set(scope["client"][0])
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            status, message = refusal
            await PlainTextResponse(message, status_code=status, headers=SECURITY_HEADERS)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    out[name] = value
                cookies = out.getlist("set-cookie")
                if cookies:
                    del out["set-cookie"]
                    for cookie in cookies:
                        out.append("set-cookie", _SAMESITE.sub("", cookie) + "; SameSite=Strict")
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        """(status, message) when the request must not reach the app, else None."""
        if scope["method"] in STATE_CHANGING:
            origin = request_origin(headers)
            if origin is not False and not self.origins.allows(origin, headers.get("host")):
                sent = headers.get("origin") or headers.get("referer")
                return 403, (f"Cross-origin request refused: origin {sent!r} is not this app's public URL "
                             "(set it with --public-url).")
        if scope["path"].rstrip("/") == UPLOAD_PATH and scope["method"] == "POST":
            return self.upload_refusal(headers)
        return None

    def upload_refusal(self, headers: Headers) -> tuple[int, str] | None:
        role = self.upload_role(dict(_cookies(headers)))
        if role is None:
            return 401, "Uploads need a login."
        if role != "admin":
            return 403, "Permission denied: uploads are for admins (data import)."
        declared = headers.get("content-length", "")
        if not declared.isdigit():
            return 411, "Uploads must declare their Content-Length."
        if int(declared) > self.max_upload_bytes:
            return 413, f"Upload of {int(declared):,} bytes is over the limit of {self.max_upload_bytes:,} bytes."
        used = folder_bytes(self.upload_dir())
        if used + int(declared) > self.upload_quota_bytes:
            return 507, (f"Upload quota reached: {used:,} of {self.upload_quota_bytes:,} bytes in use; old uploads "
                         "are deleted after an hour.")
        return None


def _cookies(headers: Headers) -> list[tuple[str, str]]:
    pairs = []
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                pairs.append((name, value))
    return pairs
