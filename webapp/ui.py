"""build_ui(services) -> gr.Blocks: the banner and one Tab per module (chat, review, admin, stats).

Tabs a role may not use are hidden after login, but that is only cosmetic: every handler checks the caller's
role itself (webapp/auth.py). webapp/server.py mounts the Blocks in the app's FastAPI server with SHORTCUTS_JS and CSS.
"""

import gradio as gr

from feedback_db.vocab import ADMIN
from webapp.auth import ADMINS, EVERYONE, REVIEWERS
from webapp.tabs.admin import build_admin_tab
from webapp.tabs.arena import build_arena_tab
from webapp.tabs.chat import build_chat_tab
from webapp.tabs.onboarding import build_onboarding, first_run_steps, panel_state
from webapp.tabs.review import build_review_tab
from webapp.tabs.stats import build_stats_tab

# Review shortcuts. Ignored while typing in a text field and when the Review tab is not on screen.
SHORTCUTS_JS = """
<script>
document.addEventListener("keydown", (e) => {
  const t = e.target;
  const typing = t.isContentEditable || t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
    (t.tagName === "INPUT" && !["radio", "checkbox", "button"].includes(t.type));
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  const review = document.getElementById("tl-review");
  if (!review || review.offsetParent === null) return;
  const click = (el) => { if (el && el.offsetParent !== null) { el.click(); e.preventDefault(); } };
  const radio = (group, value) => click(document.querySelector(`#${group} input[value="${value}"]`));
  const buttons = {a: "rv-a", b: "rv-b", t: "rv-tie", x: "rv-bad", s: "rv-skip", Enter: "rv-submit"};
  if (/^[1-5]$/.test(e.key)) radio("rv-likert", e.key);
  else if (e.key === "u") radio("rv-thumbs", "up");
  else if (e.key === "d") radio("rv-thumbs", "down");
  else if (buttons[e.key]) click(document.getElementById(buttons[e.key]));
});
</script>
"""

# A guard for events only admins' pages need: it throws on other pages (the header's First-run guide button, shown
# to admins only, is not on screen), so the `.success` step after it never calls the server.
ADMIN_PAGE_ONLY = """() => {
  if (document.getElementById("ob-open")?.offsetParent == null) throw new Error("not an admin's page");
}"""

# Logout is a POST (a GET could be triggered by any page with an <img>); the HTTP guard checks its Origin.
LOGOUT_FORM = '<form method="post" action="/logout"><button class="tl-logout" type="submit">Log out</button></form>'

CSS = """
#tl-banner { padding: 6px 12px; border-radius: 8px; background: var(--block-background-fill); }
.tl-response { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px 12px;
               max-height: 420px; overflow-y: auto; }
.tl-kbd { font-size: 0.85em; opacity: 0.75; }
"""


def build_ui(services) -> gr.Blocks:
    auth = services.auth

    def session(request: gr.Request) -> tuple:
        user = auth.require(request, *EVERYONE)
        reviewer, admin = user.role in REVIEWERS, user.role == ADMIN
        return (f"Signed in as **{user.username}** ({user.role})", services.banner(),
                gr.update(visible=reviewer), gr.update(visible=admin), gr.Timer(active=admin))

    def onboarding_show(request: gr.Request) -> tuple:
        """On page load: the first-run panel opens by itself for admins of an empty store only (no prompts yet);
        admins keep a button that reopens it."""
        user = auth.require(request, *EVERYONE)
        steps = first_run_steps(services.store)
        admin = user.role == ADMIN
        return gr.update(visible=admin and not steps["prompts"]), *panel_state(steps), gr.update(visible=admin)

    def onboarding_open(request: gr.Request) -> tuple:
        auth.require(request, *ADMINS)
        return gr.update(visible=True), *panel_state(first_run_steps(services.store))

    def onboarding_after_judgment(request: gr.Request) -> tuple:
        """After a review judgment (the reviewer's counts changed): an admin's panel ticks *Review* and highlights
        the next step without a click on the panel; nothing for other roles."""
        user = auth.require(request, *EVERYONE)
        if user.role != ADMIN:
            return (gr.skip(),) * len(steps)
        return panel_state(first_run_steps(services.store))

    def banner(request: gr.Request) -> str:
        auth.require(request, *EVERYONE)
        return services.banner()

    # uploads and generated files older than an hour are deleted every 10 minutes
    with gr.Blocks(title="Tuneloop", delete_cache=(600, 3600)) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown("## Tuneloop")
            banner_md = gr.Markdown(elem_id="tl-banner")
            who = gr.Markdown()
            # a column keeps the button its own height in the equal-height row; shown to admins only
            with gr.Column(scale=0, min_width=150, visible=False) as guide_box:
                guide = gr.Button("First-run guide", size="sm", elem_id="ob-open")
            gr.HTML(LOGOUT_FORM)
        onboarding, steps, to_review, close = build_onboarding(services)  # steps: checklist and step buttons
        with gr.Tabs() as tabs:
            with gr.Tab("Chat"):
                build_chat_tab(services)
            with gr.Tab("Arena"):
                build_arena_tab(services)
            with gr.Tab("Review", visible=False, id="review") as review_tab:
                reviewer_counts = build_review_tab(services)
            with gr.Tab("Admin", visible=False) as admin_tab:
                rounds_timer = build_admin_tab(services)
            with gr.Tab("Stats") as stats_tab:
                build_stats_tab(services, stats_tab)
        demo.load(session, None, [who, banner_md, review_tab, admin_tab, rounds_timer],
                  api_name=auth.endpoint("session", *EVERYONE))
        demo.load(onboarding_show, None, [onboarding, *steps, guide_box],
                  api_name=auth.endpoint("onboarding_show", *EVERYONE))
        guide.click(onboarding_open, None, [onboarding, *steps], api_name=auth.endpoint("onboarding_open", *ADMINS))
        # outside the queue: it answers from 4 counts, and must not queue behind the reviewers' judgments; asked by
        # admins' pages only (the browser's guard throws where the header has no guide button, so the server call
        # never starts): a reviewer's judgment costs no second request. The handler still checks the role itself.
        reviewer_counts.change(None, js=ADMIN_PAGE_ONLY).success(
            onboarding_after_judgment, None, steps, queue=False, show_progress="hidden",
            api_name=auth.endpoint("onboarding_after_judgment", *EVERYONE))
        close.click(lambda: gr.update(visible=False), None, onboarding, api_visibility="private")
        to_review.click(lambda: gr.Tabs(selected="review"), None, tabs, api_visibility="private")
        gr.Timer(2.0).tick(banner, None, banner_md, api_name=auth.endpoint("banner", *EVERYONE),
                           show_progress="hidden")
    return demo
