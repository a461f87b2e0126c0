"""Admin › Versions: lineage, metrics and the evaluation gate (verdict, votes still needed, the full gate report);
promote (hot-swap), roll back, archive, export, compare."""

import gradio as gr
import pandas as pd

from webapp import gates
from webapp.auth import ADMINS
from webapp.exports import export_version
from webapp.serving.errors import BASE, VersionLoadError

VERSION_COLUMNS = ["name", "status", "parent", "method", "technique", "gate", "metrics", "created"]
COMPARE_COLUMNS = ["prompt", "A", "B"]


GATE_KEYS = ("gate", "win_rate_vs_active", "promoted")  # written by training.evaluate / services.check_gates
STATUS = {"pass": "✅ passed", "fail": "❌ not better", "inconclusive": "❔ inconclusive"}


def gate_text(gate: dict | None) -> str:
    """One line for the versions table: the verdict (or the votes a human sign-off still waits for) and why."""
    if not gate:
        return "not evaluated"
    verdict = gate.get("verdict", {})
    tally = f"{verdict.get('wins', 0)} won, {verdict.get('losses', 0)} lost, {verdict.get('ties', 0)} ties"
    if gate.get("status") == "waiting":
        return f"⏳ human sign-off: waiting for {gate['missing_votes']} more votes ({tally} so far)"
    text = f"{STATUS[gate['status']]} ({gate['mode']} judge): {verdict['reason']}"
    if verdict.get("promote"):
        return text + "; promoted"
    refusals = verdict.get("refusals") or []
    return text + (f"; not auto-promoted: {refusals[0]}" if refusals and gate["status"] != "pass" else "")


def metrics_text(metrics: dict) -> str:
    """The versions table's metrics cell: the scalar metrics (floats to 3 significant digits); the gate keys, empty
    values and lists (an SDK adapter's call history) stay out; a dash when nothing is left."""
    shown = [f"{k}={x:.3g}" if isinstance(x, float) else f"{k}={x}" for k, x in metrics.items()
             if k not in GATE_KEYS and isinstance(x, int | float | str) and x != ""]
    return ", ".join(shown) or "—"


def build_versions_tab(services, tab: gr.Tab) -> None:
    auth, store = services.auth, services.store

    def table() -> pd.DataFrame:
        rows = [[v.name, v.status + (" · serving" if v.name == services.models.active else ""), v.parent or BASE,
                 v.method, v.technique, gate_text(gates.gate_status(store, v.name)), metrics_text(v.metrics),
                 v.created[:19]]
                for v in sorted(store.list_versions(), key=lambda v: -v.id)]
        return pd.DataFrame(rows, columns=VERSION_COLUMNS)

    def refreshed() -> tuple:
        names = services.servable_versions()
        return table(), gr.update(choices=[v.name for v in store.list_versions()]), gr.update(choices=names), \
            gr.update(choices=names)

    def versions_list(request: gr.Request) -> tuple:
        auth.require(request, *ADMINS)
        return refreshed()

    def versions_promote(name: str | None, request: gr.Request) -> tuple:
        admin = auth.require(request, *ADMINS)
        promote(name or "", admin.username)
        gr.Info(f"{name} is live.")
        return refreshed()

    def versions_rollback(request: gr.Request) -> tuple:
        admin = auth.require(request, *ADMINS)
        active = store.active_version()
        if active is None:
            raise gr.Error("The base model is serving; there is nothing to roll back.")
        promote(active.parent or BASE, admin.username)
        store.audit(admin.username, "rollback", {"from": active.name, "to": active.parent or BASE})
        gr.Info(f"Rolled back to {active.parent or BASE}.")
        return refreshed()

    def versions_back(request: gr.Request) -> tuple:
        admin = auth.require(request, *ADMINS)
        previous = store.previously_active()
        if previous is None or previous == services.models.active:
            raise gr.Error("No other version has been active yet; there is nothing to go back to.")
        serving = services.models.active
        promote(previous, admin.username)
        store.audit(admin.username, "back_to_previous", {"from": serving, "to": previous})
        gr.Info(f"Back to {previous}.")
        return refreshed()

    def versions_archive(name: str | None, request: gr.Request) -> tuple:
        admin = auth.require(request, *ADMINS)
        if not name or name == services.models.active:
            raise gr.Error("Pick a version that is not serving (promote another one first).")
        if store.get_version(name) is None:
            raise gr.Error(f"There is no version named {name!r}.")
        store.archive_version(name)
        store.audit(admin.username, "archive", {"version": name})
        return refreshed()

    def versions_compare(a: str, b: str, count: float, request: gr.Request,
                         progress=gr.Progress()) -> pd.DataFrame:  # noqa: B008 (Gradio injects it)
        admin = auth.require(request, *ADMINS)
        prompts = store.list_prompts(split="heldout")[: int(count)]
        if not prompts:
            raise gr.Error("No held-out prompts: import prompts with split=heldout first.")
        try:
            with services.usage.slot(admin.username, "compare"):
                rows = services.jobs.compare(a, b, prompts,
                                             progress=lambda done, total: progress((done, total), unit="answers"))
        except VersionLoadError as err:
            raise gr.Error(str(err)) from err
        return pd.DataFrame(rows, columns=COMPARE_COLUMNS)

    def versions_export(name: str | None, merged: bool, request: gr.Request) -> tuple:
        admin = auth.require(request, *ADMINS)
        if not name:
            raise gr.Error("Pick a version to export.")
        try:
            folder, archive = export_version(store, services.data_dir, name, merged, admin.username)
        except ValueError as err:
            raise gr.Error(f"Not exported: {err}") from err
        text = f"Exported **{name}** to `{folder}` on the server (README.md is its model card)."
        return text + (" Download the zip below." if archive else ""), str(archive) if archive else None

    def versions_gate_report(name: str | None, request: gr.Request) -> dict:
        auth.require(request, *ADMINS)
        try:
            return gates.gate_report(store, name or "")
        except KeyError as err:
            raise gr.Error(str(err)) from err

    def promote(name: str, username: str) -> None:
        try:
            services.promote(name, username)
        except (VersionLoadError, KeyError, ValueError) as err:
            raise gr.Error(f"Not promoted, {services.models.active} keeps serving: {err}") from err

    versions = gr.Dataframe(pd.DataFrame(columns=VERSION_COLUMNS), label="Versions (newest first)", interactive=False,
                            wrap=True)
    with gr.Row():
        pick = gr.Dropdown([], label="Version", scale=3, allow_custom_value=True)
        refresh = gr.Button("↻ Refresh", scale=1)
        promote_btn = gr.Button("Promote (hot-swap)", variant="primary", scale=1)
        rollback = gr.Button("Roll back to parent", scale=1)
        back = gr.Button("Back to previously active", scale=1)
        archive = gr.Button("Archive", variant="stop", scale=1)
        report_btn = gr.Button("Gate report", scale=1)
    with gr.Accordion("Gate report: prompts, both answers, each judgment, interval, verdict", open=False):
        report = gr.JSON(label="Gate report")
    gr.Markdown("#### Export a version (Hugging Face folder with a model card, under data/exports/)")
    with gr.Row():
        merged = gr.Checkbox(False, label="Merged into the base (plain transformers folder; LoRA versions)", scale=3)
        export = gr.Button("Export", scale=1)
    exported = gr.Markdown()
    download = gr.File(label="Adapter zip", interactive=False)
    gr.Markdown("#### Compare two versions on held-out prompts")
    with gr.Row():
        version_a = gr.Dropdown([BASE], value=BASE, label="A", allow_custom_value=True)
        version_b = gr.Dropdown([BASE], value=BASE, label="B", allow_custom_value=True)
        count = gr.Slider(1, 20, value=5, step=1, label="Prompts")
        compare = gr.Button("Compare", variant="primary")
    answers = gr.Dataframe(pd.DataFrame(columns=COMPARE_COLUMNS), label="Answers", interactive=False, wrap=True)

    shown = [versions, pick, version_a, version_b]
    gr.on([refresh.click, tab.select], versions_list, None, shown, api_name=auth.endpoint("versions_list", *ADMINS))
    promote_btn.click(versions_promote, pick, shown, api_name=auth.endpoint("versions_promote", *ADMINS))
    rollback.click(versions_rollback, None, shown, api_name=auth.endpoint("versions_rollback", *ADMINS))
    back.click(versions_back, None, shown, api_name=auth.endpoint("versions_back", *ADMINS))
    archive.click(versions_archive, pick, shown, api_name=auth.endpoint("versions_archive", *ADMINS))
    export.click(versions_export, [pick, merged], [exported, download],
                 api_name=auth.endpoint("versions_export", *ADMINS))
    report_btn.click(versions_gate_report, pick, report, api_name=auth.endpoint("versions_gate_report", *ADMINS))
    compare.click(versions_compare, [version_a, version_b, count], answers,
                  api_name=services.usage.limited(auth.endpoint("versions_compare", *ADMINS), "compare"))
