"""Tuneloop web app: the composition root — parse args, build the services, serve build_app(services, build_ui(...)).

    python app.py                                           # http://127.0.0.1:7860 (--host 0.0.0.0 to expose it)
    python app.py create-user --role admin --username alice  # prompts for the password
    python app.py create-token --username alice --label ci  # prints a REST API token (shown once)
    TUNELOOP_ADMIN=alice:secret-pass python app.py          # creates that admin on first start (no users yet)
    python app.py --base-model ./my-hf-folder --data-dir data --port 7860
    python app.py --host 127.0.0.1 --public-url https://tuneloop.example.org  # behind a reverse proxy
"""

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path

import uvicorn

from feedback_db.passwords import password_problem
from feedback_db.splits import DEFAULT_HELDOUT_SHARE
from feedback_db.store import FeedbackStore
from feedback_db.vocab import ROLES
from training import runner
from training.base_model import DEFAULT_BASE_MODEL, resolve_base_model
from webapp.auth import Auth
from webapp.server import build_app, public_origins
from webapp.services import Services
from webapp.serving.service import ModelService
from webapp.ui import build_ui
from webapp.usage_limits import UsageLimits
from webapp.webhooks import Notifier

log = logging.getLogger("tuneloop.app")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["serve", "create-user", "create-token"], default="serve")
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL, help="Embedded default, a local HF folder or a "
                                                                          "hub id.")
    parser.add_argument("--data-dir", default="data", type=Path)
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the app.")
    parser.add_argument("--port", default=7860, type=int)
    parser.add_argument("--public-url", help="The URL browsers use to reach the app, e.g. https://tl.example.org "
                                             "behind a reverse proxy; state-changing requests from any other origin "
                                             "are refused (default: the bind address).")
    parser.add_argument("--forwarded-allow-ips", default=None,
                        help="Addresses of reverse proxies whose X-Forwarded-For is trusted (the login throttle "
                             "counts the real client address); default: none.")
    parser.add_argument("--annotators-per-item", default=1, type=int,
                        help="Reviewers who judge each review item (2+ measures agreement between them).")
    parser.add_argument("--heldout-share", default=DEFAULT_HELDOUT_SHARE, type=float,
                        help="Share of new prompts (chat, imports without a split) held out for the evaluation gate, "
                             "chosen by a hash of the prompt text.")
    parser.add_argument("--user-in-flight", default=1, type=int,
                        help="Model requests (chat, side-by-side, arena, compare, generate) one user may have running "
                             "at once, per kind.")
    parser.add_argument("--user-burst", default=6, type=int,
                        help="Model requests one user may send in a burst, per kind, before the rate limit applies.")
    parser.add_argument("--user-refill-s", default=5.0, type=float,
                        help="After the burst: one more model request per this many seconds, per user and kind.")
    parser.add_argument("--username", help="create-user / create-token: the user's name (prompted when missing).")
    parser.add_argument("--password", help="create-user: the password (prompted when missing).")
    parser.add_argument("--role", choices=ROLES, default="reviewer", help="create-user: the new user's role.")
    parser.add_argument("--label", default="", help="create-token: what the token is for (shown in token lists).")
    return parser.parse_args(argv)


def open_store(data_dir: Path, heldout_share: float = DEFAULT_HELDOUT_SHARE) -> FeedbackStore:
    data_dir.mkdir(parents=True, exist_ok=True)
    return FeedbackStore(data_dir / "tuneloop.db", heldout_share=heldout_share)


def create_user(args: argparse.Namespace) -> None:
    username = args.username or input("Username: ").strip()
    password = args.password or getpass.getpass("Password: ")
    problem = password_problem(password)
    if problem:
        sys.exit(f"User not created: {problem}.")
    try:
        open_store(args.data_dir).create_user(username, password, args.role)
    except ValueError as err:
        sys.exit(f"User not created: {err}.")
    print(f"Created {args.role} {username!r} in {args.data_dir / 'tuneloop.db'}.")


def create_token(args: argparse.Namespace) -> None:
    username = args.username or input("Username: ").strip()
    store = open_store(args.data_dir)
    if store.get_user(username) is None:
        sys.exit(f"No user {username!r} in {args.data_dir / 'tuneloop.db'}: create it first with `create-user`.")
    token = store.create_api_token(username, args.label)
    store.audit("system", "create_api_token", {"username": username, "label": args.label, "via": "cli"})
    print(f"REST API token for {username!r} (shown once; send it as `Authorization: Bearer <token>`):\n{token}")


def first_admin(store: FeedbackStore, spec: str | None) -> None:
    """TUNELOOP_ADMIN=name:password creates the first admin of an empty store; ignored once users exist."""
    if store.list_users():
        return
    if not spec or ":" not in spec:
        log.warning("No users yet: run `python app.py create-user --role admin` or set TUNELOOP_ADMIN=name:password.")
        return
    username, password = spec.split(":", 1)
    problem = password_problem(password)
    if problem:
        log.error("TUNELOOP_ADMIN ignored: %s. No admin was created.", problem)
        return
    try:
        store.create_user(username, password, "admin")
    except ValueError as err:
        log.error("TUNELOOP_ADMIN ignored: %s. No admin was created.", err)
        return
    store.audit("system", "create_user", {"username": username, "role": "admin", "via": "TUNELOOP_ADMIN"})
    log.info("Created admin %r from TUNELOOP_ADMIN.", username)


def build_services(args: argparse.Namespace) -> Services:
    store = open_store(args.data_dir, args.heldout_share)
    orphans = runner.stop_orphaned_runs(store)
    if orphans:
        log.warning("Stopped round(s) %s still training from a previous start of the app.", orphans)
    # rounds started with `python -m training round` keep training (orphans of an earlier app were just killed)
    live = [run_id for run_id in runner.live_cli_runs(store) if run_id not in orphans]
    interrupted = store.mark_interrupted_runs(keep=live)
    if interrupted:
        log.warning("Marked %d unfinished run(s) from a previous start as interrupted.", interrupted)
    store.mark_interrupted_generation_jobs()
    if live:
        log.info("Round(s) %s started from the command line are still training; shown as running.", live)
    first_admin(store, os.environ.get("TUNELOOP_ADMIN"))
    base_model = resolve_base_model(args.base_model, args.data_dir)  # prints progress during the one-time conversion
    models = ModelService(base_model, args.data_dir / "versions")
    services = Services(
        store=store, models=models, auth=Auth(store), data_dir=args.data_dir, base_model=base_model,
        annotators_per_item=args.annotators_per_item,
        usage=UsageLimits(args.user_in_flight, args.user_burst, args.user_refill_s),
        runner=runner,  # the module training.runner is the RoundRunner
    )
    services.sync_active()  # a missing/corrupt active version: serve the base model, say why in banner and log
    return services


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[tuneloop] %(levelname)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    if args.command == "create-user":
        create_user(args)
        return
    if args.command == "create-token":
        create_token(args)
        return
    origins = public_origins(args.public_url, args.host, args.port)  # a bad --public-url fails before the model loads
    # Gradio's uploads and generated files live in the data dir, where the upload quota counts them
    os.environ.setdefault("GRADIO_TEMP_DIR", str((args.data_dir / "gradio-tmp").resolve()))
    # Gradio's queue rebuilds an analytics summary (a pandas DataFrame of up to 10,000 past events, grouped, with
    # percentiles) after every event, holding the GIL: ~3 ms per review click at 2,000 events, ~7 ms at 10,000 on
    # this CPU. Only Gradio's monitoring page reads it: refresh it every 1,000 events, over the last 1,000.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")
    services = build_services(args)
    services.start_poller(interval_s=1.0)
    Notifier(services.store, args.annotators_per_item).start()
    app = build_app(services, build_ui(services).queue(default_concurrency_limit=4), origins)
    log.info("Serving on http://%s:%d (public origin %s)", args.host, args.port, ", ".join(origins.public))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=bool(args.forwarded_allow_ips),
                forwarded_allow_ips=args.forwarded_allow_ips)


if __name__ == "__main__":
    main()
