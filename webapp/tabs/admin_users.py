"""Admin › Users (add, change role, disable, REST API tokens) and Admin › Audit log. Every change is audited."""

import json

import gradio as gr
import pandas as pd

from feedback_db.passwords import password_problem
from feedback_db.vocab import ROLES
from webapp import limits
from webapp.auth import ADMINS

USER_COLUMNS = ["username", "role", "disabled", "created"]
AUDIT_COLUMNS = ["created", "username", "action", "detail"]
TOKEN_COLUMNS = ["id", "username", "label", "prefix", "created", "revoked"]


def build_users_tab(services, tab: gr.Tab) -> None:
    auth, store = services.auth, services.store

    def table() -> pd.DataFrame:
        return pd.DataFrame([[u.username, u.role, u.disabled, u.created] for u in store.list_users()],
                            columns=USER_COLUMNS)

    def users_list(request: gr.Request) -> pd.DataFrame:
        auth.require(request, *ADMINS)
        return table()

    def users_add(username: str, password: str, role: str, request: gr.Request) -> tuple[pd.DataFrame, str]:
        admin = auth.require(request, *ADMINS)
        limits.check_text("Username", username, limits.MAX_USERNAME_CHARS)
        limits.check_text("Password", password, limits.MAX_PASSWORD_CHARS)
        problem = password_problem(password)
        if not username.strip() or problem:
            raise gr.Error(f"Give a username and a password: {problem}." if problem else "Give a username.")
        if store.get_user(username.strip()):
            raise gr.Error(f"User {username.strip()!r} already exists.")
        try:
            store.create_user(username.strip(), password, role)
        except ValueError as err:
            raise gr.Error(f"User not created: {err}.") from None
        store.audit(admin.username, "create_user", {"username": username.strip(), "role": role})
        return table(), ""

    def known_user(username: str) -> None:
        if not username or store.get_user(username) is None:
            raise gr.Error(f"There is no user named {username!r}.")

    def users_set_role(username: str, role: str, request: gr.Request) -> pd.DataFrame:
        admin = auth.require(request, *ADMINS)
        check_not_self(admin.username, username, "change your own role")
        known_user(username)
        store.set_role(username, role)
        store.audit(admin.username, "set_role", {"username": username, "role": role})
        return table()

    def users_set_disabled(username: str, disabled: bool, request: gr.Request) -> pd.DataFrame:
        admin = auth.require(request, *ADMINS)
        check_not_self(admin.username, username, "disable yourself")
        known_user(username)
        store.set_disabled(username, disabled)
        ended = auth.sessions.end(username) if disabled else 0  # an old cookie must not outlive the account
        store.audit(admin.username, "disable_user" if disabled else "enable_user",
                    {"username": username, **({"sessions_ended": ended} if disabled else {})})
        return table()

    def token_table() -> pd.DataFrame:
        return pd.DataFrame([[t.id, t.username, t.label, t.prefix + "…", t.created[:19], (t.revoked or "")[:19]]
                             for t in store.list_api_tokens()], columns=TOKEN_COLUMNS)

    def tokens_list(request: gr.Request) -> pd.DataFrame:
        auth.require(request, *ADMINS)
        return token_table()

    def tokens_create(username: str, label: str, request: gr.Request) -> tuple[str, pd.DataFrame]:
        admin = auth.require(request, *ADMINS)
        label = limits.check_text("Token label", label, limits.MAX_TOKEN_LABEL_CHARS).strip()
        known_user(username)
        token = store.create_api_token(username, label)
        store.audit(admin.username, "create_api_token", {"username": username, "label": label})
        return token, token_table()

    def tokens_revoke(token_id: float | None, request: gr.Request) -> pd.DataFrame:
        admin = auth.require(request, *ADMINS)
        if token_id is None or int(token_id) not in {t.id for t in store.list_api_tokens()}:
            raise gr.Error(f"There is no API token with id {token_id}.")
        store.revoke_api_token(int(token_id))
        store.audit(admin.username, "revoke_api_token", {"id": int(token_id)})
        return token_table()

    def users_disable(username: str, request: gr.Request) -> pd.DataFrame:
        return users_set_disabled(username, True, request)

    def users_enable(username: str, request: gr.Request) -> pd.DataFrame:
        return users_set_disabled(username, False, request)

    # Initial values land in /config, which every logged-in user can read: admin data is only loaded by handlers.
    users = gr.Dataframe(pd.DataFrame(columns=USER_COLUMNS), label="Users", interactive=False)
    refresh = gr.Button("↻ Refresh", size="sm")
    with gr.Row():
        with gr.Column():
            gr.Markdown("#### Add a user")
            new_name = gr.Textbox(label="Username")
            new_password = gr.Textbox(label="Password (8+ characters)", type="password")
            new_role = gr.Radio(list(ROLES), value="reviewer", label="Role")
            add = gr.Button("Add user", variant="primary")
        with gr.Column():
            gr.Markdown("#### Change a user")
            who = gr.Textbox(label="Username")
            role = gr.Radio(list(ROLES), value="reviewer", label="Role")
            set_role = gr.Button("Set role")
            with gr.Row():
                disable = gr.Button("Disable", variant="stop")
                enable = gr.Button("Enable")
    with gr.Accordion("REST API tokens (Authorization: Bearer …; see README › REST API)", open=False):
        tokens = gr.Dataframe(pd.DataFrame(columns=TOKEN_COLUMNS), label="Tokens", interactive=False)
        with gr.Row():
            token_user = gr.Textbox(label="Username")
            token_label = gr.Textbox(label="Label (what the token is for)")
            create_token = gr.Button("Create token", variant="primary")
        new_token = gr.Textbox(label="New token: copy it now, it is not shown again", interactive=False)
        with gr.Row():
            token_id = gr.Number(label="Token id", precision=0)
            revoke_token = gr.Button("Revoke", variant="stop")

    gr.on([refresh.click, tab.select], users_list, None, users, api_name=auth.endpoint("users_list", *ADMINS))
    gr.on([refresh.click, tab.select], tokens_list, None, tokens, api_name=auth.endpoint("tokens_list", *ADMINS))
    create_token.click(tokens_create, [token_user, token_label], [new_token, tokens],
                       api_name=auth.endpoint("tokens_create", *ADMINS))
    revoke_token.click(tokens_revoke, token_id, tokens, api_name=auth.endpoint("tokens_revoke", *ADMINS))
    add.click(users_add, [new_name, new_password, new_role], [users, new_password],
              api_name=auth.endpoint("users_add", *ADMINS))
    set_role.click(users_set_role, [who, role], users, api_name=auth.endpoint("users_set_role", *ADMINS))
    disable.click(users_disable, who, users,
                  api_name=auth.endpoint("users_disable", *ADMINS))
    enable.click(users_enable, who, users,
                 api_name=auth.endpoint("users_enable", *ADMINS))


def check_not_self(admin: str, username: str, what: str) -> None:
    """An admin locking themselves out would leave nobody to undo it."""
    if admin == username:
        raise gr.Error(f"You cannot {what}; ask another admin.")


def build_audit_tab(services, tab: gr.Tab) -> None:
    auth, store = services.auth, services.store

    def audit_list(limit: float, request: gr.Request) -> pd.DataFrame:
        auth.require(request, *ADMINS)
        rows = [[e.created[:19], e.username, e.action, json.dumps(e.detail, ensure_ascii=False)]
                for e in store.list_audit(int(limit))]
        return pd.DataFrame(rows, columns=AUDIT_COLUMNS)

    with gr.Row():
        limit = gr.Number(200, label="Last N entries", precision=0, scale=1)
        refresh = gr.Button("↻ Refresh", scale=1)
    log = gr.Dataframe(pd.DataFrame(columns=AUDIT_COLUMNS), label="Admin actions, newest first", interactive=False,
                       wrap=True)
    gr.on([refresh.click, tab.select], audit_list, limit, log, api_name=auth.endpoint("audit_list", *ADMINS))
