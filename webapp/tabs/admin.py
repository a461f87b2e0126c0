"""Admin console (admins only): Data, Browse, Rounds, Versions, Guidelines & criteria, Users, Webhooks, Audit —
one sub-tab per module. No sub-tab name contains another tab's name (browser tests find tabs by substring).

Sub-tabs load their tables when selected (never into the page config, which any logged-in user can read).
"""

import gradio as gr

from webapp.tabs.admin_browse import build_browse_tab
from webapp.tabs.admin_data import build_data_tab
from webapp.tabs.admin_review_form import build_review_form_tab
from webapp.tabs.admin_rounds import build_rounds_tab
from webapp.tabs.admin_users import build_audit_tab, build_users_tab
from webapp.tabs.admin_versions import build_versions_tab
from webapp.tabs.admin_webhooks import build_webhooks_tab


def build_admin_tab(services) -> gr.Timer:
    """Returns the Rounds progress timer, which the UI activates for admins only."""
    with gr.Tabs():
        with gr.Tab("Data") as tab:
            build_data_tab(services, tab)
        with gr.Tab("Browse") as tab:
            build_browse_tab(services, tab)
        with gr.Tab("Rounds"):
            timer = build_rounds_tab(services)
        with gr.Tab("Versions") as tab:
            build_versions_tab(services, tab)
        with gr.Tab("Guidelines & criteria") as tab:
            build_review_form_tab(services, tab)
        with gr.Tab("Users") as tab:
            build_users_tab(services, tab)
        with gr.Tab("Webhooks") as tab:
            build_webhooks_tab(services, tab)
        with gr.Tab("Audit log") as tab:
            build_audit_tab(services, tab)
    return timer
