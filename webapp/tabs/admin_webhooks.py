"""Admin › Webhooks: outgoing notifications (round finished / failed, gate verdict, promotion, queue empty) to a URL,
signed with HMAC-SHA256 of the body under the hook's secret; retried with back-off; the delivery log. See
webapp/webhooks.py for the payload and headers."""

import gradio as gr
import pandas as pd

from feedback_db.vocab import WEBHOOK_EVENTS
from webapp import limits
from webapp.auth import ADMINS

HOOK_COLUMNS = ["id", "url", "events", "by", "created"]
LOG_COLUMNS = ["id", "hook", "event", "key", "status", "attempts", "http", "error", "created", "delivered"]
MAX_URL_CHARS = 2_000


def build_webhooks_tab(services, tab: gr.Tab) -> None:
    auth, store = services.auth, services.store

    def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
        hooks = [[h.id, h.url, ", ".join(h.events), h.username, h.created[:19]] for h in store.list_webhooks()]
        log = [[d.id, d.webhook_id, d.event, d.event_key, d.status, d.attempts, d.http_status or "", d.last_error,
                d.created[:19], (d.delivered or "")[:19]] for d in store.list_deliveries()]
        return pd.DataFrame(hooks, columns=HOOK_COLUMNS), pd.DataFrame(log, columns=LOG_COLUMNS)

    def webhooks_list(request: gr.Request) -> tuple[pd.DataFrame, pd.DataFrame]:
        auth.require(request, *ADMINS)
        return tables()

    def webhooks_add(url: str, secret: str, events: list[str], request: gr.Request) -> tuple:
        admin = auth.require(request, *ADMINS)
        limits.check_text("URL", url, MAX_URL_CHARS)
        limits.check_text("Secret", secret, limits.MAX_PASSWORD_CHARS)
        try:
            hook_id = store.add_webhook(url.strip(), secret, events or [], admin.username)
        except ValueError as err:
            raise gr.Error(f"Webhook not added: {err}") from err
        store.audit(admin.username, "add_webhook", {"id": hook_id, "url": url.strip(), "events": events})
        return *tables(), "", ""

    def webhooks_remove(hook_id: float | None, request: gr.Request) -> tuple[pd.DataFrame, pd.DataFrame]:
        admin = auth.require(request, *ADMINS)
        try:
            store.remove_webhook(int(hook_id or 0))
        except KeyError as err:
            raise gr.Error(f"Pick a webhook id from the table: {err}") from err
        store.audit(admin.username, "remove_webhook", {"id": int(hook_id)})
        return tables()

    with gr.Row():
        url = gr.Textbox(label="URL (http(s)://…)", scale=3)
        secret = gr.Textbox(label="Secret (16+ characters; signs every delivery)", type="password", scale=2)
    events = gr.CheckboxGroup(list(WEBHOOK_EVENTS), value=list(WEBHOOK_EVENTS), label="Events")
    with gr.Row():
        add = gr.Button("Add webhook", variant="primary")
        hook_id = gr.Number(label="Webhook id", precision=0)
        remove = gr.Button("Remove", variant="stop")
        refresh = gr.Button("↻ Refresh")
    hooks = gr.Dataframe(pd.DataFrame(columns=HOOK_COLUMNS), label="Webhooks", interactive=False)
    deliveries = gr.Dataframe(pd.DataFrame(columns=LOG_COLUMNS), label="Delivery log (newest first)",
                              interactive=False, wrap=True)

    gr.on([tab.select, refresh.click], webhooks_list, None, [hooks, deliveries],
          api_name=auth.endpoint("webhooks_list", *ADMINS))
    add.click(webhooks_add, [url, secret, events], [hooks, deliveries, url, secret],
              api_name=auth.endpoint("webhooks_add", *ADMINS))
    remove.click(webhooks_remove, hook_id, [hooks, deliveries], api_name=auth.endpoint("webhooks_remove", *ADMINS))
