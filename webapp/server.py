"""The app's own FastAPI server: the Gradio UI mounted at `/`, the REST API at /api/v1, the HTTP guard in front.

    app = build_app(services, build_ui(services), public_url="https://tuneloop.example.org")
    uvicorn.run(app, host="127.0.0.1", port=7860)

Mounting Gradio (instead of `launch()`) lets the app own what sits in front of it: the CSRF origin check, a
strict CORS allow-list (Gradio's own middleware echoes any localhost-alias Origin with credentials), framing and
cookie policies, upload rules and refusing over-limit model requests before Gradio reads them
(webapp/http_guard.py), logout as a POST, and no anonymous /openapi.json.
"""

from pathlib import Path

import gradio as gr
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount

from webapp.auth import Sessions
from webapp.http_guard import HttpGuard, Origins, origin_of
from webapp.ingest_api import ingest_routes
from webapp.limits import MAX_MODEL_BODY_BYTES
from webapp.ratelimit import LoginThrottle
from webapp.rest_api import rest_routes
from webapp.ui import CSS, SHORTCUTS_JS

MAX_UPLOAD_BYTES = 200 * 1024 * 1024  # one request (the largest dataset file an admin imports)
UPLOAD_QUOTA_BYTES = 2 * 1024 * 1024 * 1024  # everything in the upload folder; delete_cache empties it hourly
REFUSAL_DELAY_S = 0.25  # one user's over-limit model requests are answered (429) one at a time, this far apart


def public_origins(public_url: str | None, host: str, port: int) -> Origins:
    """--public-url's origin when given; otherwise the bind address plus the request's own Host."""
    if public_url:
        origin = origin_of(public_url)
        if origin is None:
            raise ValueError(f"--public-url must be an http(s) URL such as https://tuneloop.example.org; "
                             f"got {public_url!r}")
        return Origins((origin,), same_host=False)
    return Origins((origin_of(f"http://{host}:{port}"),))


def build_app(services, demo: gr.Blocks, origins: Origins, max_upload_bytes: int = MAX_UPLOAD_BYTES,
              upload_quota_bytes: int = UPLOAD_QUOTA_BYTES) -> FastAPI:
    app = FastAPI(routes=[*rest_routes(services), *ingest_routes(services)], openapi_url=None, docs_url=None,
                  redoc_url=None)
    sessions = Sessions()
    services.auth.sessions = sessions

    @app.post("/logout")
    def logout(request: Request) -> Response:
        sessions.end_request(request.cookies)
        response = RedirectResponse("/", status_code=303)
        for name in sessions.cookie_names():
            response.delete_cookie(name, path="/")
        return response

    @app.get("/logout")
    def logout_get() -> Response:  # Gradio's GET /logout would let any page log a user out with an <img>
        return PlainTextResponse("Log out with a POST (the Log out button).", status_code=405)

    throttle = LoginThrottle(services.auth.login)
    # run_history off: Gradio 6 would record every public event's inputs and outputs (in the browser's storage, or a
    # Hugging Face bucket a request header names); judgments and chats belong in the store only, and each event
    # skips the recording task
    gr.mount_gradio_app(app, demo, path="/", auth=throttle.login, max_file_size=max_upload_bytes,
                        auth_message="Tuneloop: sign in with your Tuneloop account.", head=SHORTCUTS_JS, css=CSS,
                        theme=gr.themes.Soft(), footer_links=["api"], run_history=False,
                        app_kwargs={"openapi_url": None, "docs_url": None, "redoc_url": None})
    (gradio_app,) = [route.app for route in app.routes if isinstance(route, Mount)]
    sessions.attach(gradio_app, services.store)
    app.add_middleware(CORSMiddleware, allow_origins=list(origins.public), allow_credentials=True,
                       allow_methods=["GET", "POST"], allow_headers=["content-type", "authorization"])
    event_names = {fn_index: fn.api_name for fn_index, fn in demo.fns.items()}  # the queue names events by index
    app.add_middleware(HttpGuard, origins=origins, upload_role=sessions.role, upload_dir=lambda: Path(
        gradio_app.uploaded_file_dir), max_upload_bytes=max_upload_bytes, upload_quota_bytes=upload_quota_bytes,
        username=sessions.username, usage=services.usage, event_name=event_names.get,
        max_model_body_bytes=MAX_MODEL_BODY_BYTES, refusal_delay_s=REFUSAL_DELAY_S)
    app.state.sessions = sessions
    app.state.throttle = throttle
    return app
