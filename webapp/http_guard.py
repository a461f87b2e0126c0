"""HTTP guard: an ASGI middleware in front of the whole app (Gradio, its login and queue, the REST API).

- Cross-site request forgery: a state-changing request (POST, PUT, PATCH, DELETE) whose `Origin` (or, without
  one, `Referer`) is not one of the app's public origins is refused with 403. Browsers always send `Origin` on
  cross-origin POSTs; clients without either header are not browsers and carry no victim's cookies.
- Framing: `Content-Security-Policy: frame-ancestors 'self'` and `X-Frame-Options: SAMEORIGIN` on every response.
- Cookies: Gradio's session cookies are rewritten to `SameSite=Strict`.
- Uploads (`/gradio_api/upload`): admins only, a declared `Content-Length` no larger than `max_upload_bytes`,
  and refused once the upload folder holds `upload_quota_bytes`.
- Model events (chat, side-by-side, arena, version compare: the events `UsageLimits.limited` registered): a
  request of a user who is at their in-flight or rate limit in that event's lane is answered 429 with the reason as
  JSON (`{"detail": ...}`, which Gradio's browser client shows as the error) before the body is read, so a flood
  costs no JSON parsing, no Gradio queue and no handler. Named calls (`/gradio_api/call/<name>`, `/run/<name>`) say
  the event in the path; those declaring more than `max_model_body_bytes` are 413 and chunked ones 411, unread. The
  browser's `/gradio_api/queue/join` names it in the body (`fn_index`): only when the user is at a limit in some lane
  is that body read and parsed here (and handed on unchanged when its event is not refused). The user comes from the
  session cookie, never from the body; the handler's `UsageLimits.slot` checks again. A user's refusals are
  answered one at a time, `refusal_delay_s` apart: however many connections a flood opens, it gets a few answers a
  second, and the app does that little work (a flood from one viewer over 8 connections sent ~490 requests a second
  while answers were immediate: its own client's CPU then slowed everyone on a small machine as much as Gradio's
  work had before).
- The client address of the request is published in `CLIENT_ADDRESS` for the login throttle (Gradio calls the
  auth callable without the request).

    app.add_middleware(HttpGuard, origins=Origins("http://127.0.0.1:7860"), upload_role=sessions.role,
                       username=sessions.username, usage=services.usage, event_name=names.get, ...)
"""

import asyncio
import contextvars
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webapp.usage_limits import UsageLimits

CLIENT_ADDRESS: contextvars.ContextVar[str] = contextvars.ContextVar("tuneloop_client_address", default="unknown")
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
UPLOAD_PATH = "/gradio_api/upload"
QUEUE_JOIN_PATH = "/gradio_api/queue/join"
NAMED_CALL = re.compile(r"/gradio_api/(?:call/v2|call|run)/([^/]+)/?")  # POST: start event <name>
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
                 upload_dir: Callable[[], Path], max_upload_bytes: int, upload_quota_bytes: int,
                 username: Callable[[dict[str, str]], str | None], usage: UsageLimits,
                 event_name: Callable[[int], str | None], max_model_body_bytes: int, refusal_delay_s: float) -> None:
        self.app = app
        self.origins = origins
        self.upload_role = upload_role  # cookies -> the logged-in, enabled user's role (None: no such session)
        self.upload_dir = upload_dir
        self.max_upload_bytes = max_upload_bytes
        self.upload_quota_bytes = upload_quota_bytes
        self.username = username  # cookies -> the session's username (None: no session)
        self.usage = usage
        self.event_name = event_name  # Gradio's fn_index -> the event's api_name
        self.max_model_body_bytes = max_model_body_bytes
        self.refusal_delay_s = refusal_delay_s
        self._next_refusal: dict[str | None, float] = {}  # username -> when its next refusal may be answered

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
        if scope["method"] == "POST" and scope["path"].rstrip("/") == QUEUE_JOIN_PATH:
            receive, refusal = await self.queue_join_refusal(headers, receive)
        elif scope["method"] == "POST" and (named := NAMED_CALL.fullmatch(scope["path"])):
            refusal = self.model_refusal(headers, named[1])
        if refusal is not None:
            status, message = refusal
            response = JSONResponse({"detail": message}, status_code=status, headers=SECURITY_HEADERS)
            if status == 429:
                await asyncio.sleep(self.refusal_wait_s(self.username(dict(_cookies(headers)))))
            await response(scope, receive, send)
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


    def refusal_wait_s(self, username: str | None) -> float:
        """How long to hold this refusal of `username`: each is answered `refusal_delay_s` after the one before."""
        now = time.monotonic()
        answer_at = max(now, self._next_refusal.get(username, now)) + self.refusal_delay_s
        self._next_refusal[username] = answer_at
        return answer_at - now

    def model_refusal(self, headers: Headers, api_name: str) -> tuple[int, str] | None:
        """A named call of a model event: its size (declared, not read) and the user's limits in its lane."""
        lane = self.usage.lanes.get(api_name)
        if lane is None:
            return None
        declared = headers.get("content-length", "")
        if not declared.isdigit():
            return 411, "Model requests must declare their Content-Length."
        if int(declared) > self.max_model_body_bytes:
            return 413, (f"Request of {int(declared):,} bytes is over the limit of {self.max_model_body_bytes:,} "
                         "bytes for this event.")
        username = self.username(dict(_cookies(headers)))
        reason = self.usage.refusal(username, lane) if username else None  # no session: Gradio answers 401
        return None if reason is None else (429, reason)

    async def queue_join_refusal(self, headers: Headers, receive: Receive) -> tuple[Receive, tuple[int, str] | None]:
        """The browser's queue names its event in the body. Read and parse it only when the user is at a limit in
        some lane; returns the receive to hand on (replaying what was read) and the refusal, if any."""
        username = self.username(dict(_cookies(headers)))
        lanes = set(self.usage.lanes.values())
        if username is None or all(self.usage.refusal(username, lane) is None for lane in lanes):
            return receive, None
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return _replay([message], receive), None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replay = _replay([{"type": "http.request", "body": body, "more_body": False}], receive)
        try:
            fn_index = json.loads(body).get("fn_index")
        except (ValueError, AttributeError, RecursionError):  # not a JSON object: Gradio answers it
            return replay, None
        lane = self.usage.lanes.get(self.event_name(fn_index)) if isinstance(fn_index, int) else None
        reason = self.usage.refusal(username, lane) if lane else None
        return replay, None if reason is None else (429, reason)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands on `messages` first, then the real receive's."""
    async def replayed() -> Message:
        return messages.pop(0) if messages else await receive()
    return replayed


def _cookies(headers: Headers) -> list[tuple[str, str]]:
    pairs = []
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                pairs.append((name, value))
    return pairs
