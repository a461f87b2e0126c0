"""Admin › Data: import files (all-or-nothing, errors with line numbers), generate on-policy candidates, export."""

from datetime import UTC, datetime

import gradio as gr
import pandas as pd

from feedback_db.exporters import export_names, export_to_folder
from feedback_db.importers import import_file, preview_file
from feedback_db.models import GenerationJob
from feedback_db.vocab import IMPORT_KINDS, SPLITS
from webapp.auth import ADMINS
from webapp.serving.errors import BASE, VersionLoadError
from webapp.tabs.admin_rounds import clock

COUNTED = ["prompts", "responses", "demonstrations", "preference_pairs", "unpaired_labels", "ratings", "comparisons",
           "rankings", "corrections"]
REVIEW_MODES = [("Blind A/B: active vs candidate (pairwise)", "pairwise"), ("Single answer from active", "single"),
                ("Ranking: N samples from active", "ranking")]


def job_status_text(job: GenerationJob | None, now: datetime | None = None) -> str:
    """A generation job as Admin › Rounds shows a round: a status line, then its phases as a timeline (queued →
    generating → stored) with answers done/total, elapsed since queued, ETA and tokens/s."""
    if job is None:
        return "No generation job yet."
    error = f": {job.error}" if job.error else ""
    title = f"**Generation job #{job.id}** ({job.mode}, {', '.join(job.versions)}): **{job.status}**{error}"
    return f"{title}\n\n{job_timeline(job, now or datetime.now(UTC))}"


def job_timeline(job: GenerationJob, now: datetime) -> str:
    end = now if job.active else datetime.fromisoformat(job.updated)
    elapsed = (end - datetime.fromisoformat(job.created)).total_seconds()
    speed = f" · {job.tokens_per_s:.0f} tokens/s" if job.tokens_per_s else ""
    eta = f" · ETA {clock(job.eta_s)}" if job.active and job.done else ""
    progress = f"{job.done}/{job.total} answers · {clock(elapsed)} elapsed{eta}{speed}"
    if job.status == "queued":
        return f"⏳ **queued** ({clock(elapsed)}) → ⏸ generate {job.total} answers → ⏸ stored for review"
    if job.active:
        return f"✅ queued → ⏳ **generating** · {progress} → ⏸ stored for review"
    if job.status == "done":
        return f"✅ queued → ✅ generated ({progress}) → ✅ stored for review"
    return f"✅ queued → ❌ generating ({job.status} · {progress}; the answers so far are stored)"


def build_data_tab(services, tab: gr.Tab) -> None:
    auth, store = services.auth, services.store

    def counts() -> pd.DataFrame:
        return pd.DataFrame([[t, store.count(t)] for t in COUNTED], columns=["table", "rows"])

    def data_counts(request: gr.Request) -> pd.DataFrame:
        auth.require(request, *ADMINS)
        return counts()

    def data_import(path: str | None, kind: str, split: str, request: gr.Request) -> tuple[str, pd.DataFrame]:
        admin = auth.require(request, *ADMINS)
        if not path:
            raise gr.Error("Choose a .jsonl, .csv or .parquet file first.")
        try:
            report = import_file(store, path, kind, split=None if split == "auto" else split)
        except (ValueError, KeyError) as err:  # the importer names the line and field; nothing was imported
            raise gr.Error(f"Nothing imported. {err}") from err
        store.audit(admin.username, "import", {"kind": kind, "split": split, "rows": report.rows,
                                               "added": report.added})
        added = ", ".join(f"{n} {table}" for table, n in report.added.items())
        return f"✅ Imported {report.rows} rows: {added}; {report.duplicates} duplicates skipped.", counts()

    def data_preview(path: str | None, kind: str, request: gr.Request) -> tuple[str, pd.DataFrame]:
        auth.require(request, *ADMINS)
        if not path:
            return "", pd.DataFrame()
        try:
            preview = preview_file(path, kind)
        except ValueError as err:
            return f"**Cannot be imported:** {err}", pd.DataFrame()
        verdict = (f"**Would abort, nothing written:** {preview.problem}" if preview.problem else
                   "**Valid:** every row passed; press Import to write them.")
        return (f"Preview: {preview.rows} {kind} rows ({preview.format}), first {len(preview.first)} below. {verdict}",
                pd.DataFrame(preview.first))

    def data_generate(mode: str, candidate: str, samples: float, prompts: str, max_new_tokens: float,
                      temperature: float, request: gr.Request) -> str:
        admin = auth.require(request, *ADMINS)
        versions = {"single": [services.models.active], "ranking": [services.models.active],
                    "pairwise": [services.models.active, candidate]}[mode]
        if mode == "pairwise" and candidate == services.models.active:
            raise gr.Error(f"Pick a candidate other than the active version ({candidate}) for A/B.")
        prompt_ids = store.prompts_lacking_answers(versions, split=prompts)
        if not prompt_ids:
            raise gr.Error(f"Every {prompts} prompt already has answers from {', '.join(versions)}: import more.")
        samples = int(samples) if mode == "ranking" else 1
        try:
            job_id = services.jobs.start(prompt_ids, versions, samples, int(max_new_tokens),
                                                   float(temperature), mode, admin.username)
        except (VersionLoadError, ValueError) as err:
            raise gr.Error(str(err)) from err
        store.audit(admin.username, "generate_candidates", {"versions": versions, "prompts": len(prompt_ids),
                                                            "job": job_id, "mode": mode})
        return job_status_text(store.get_generation_job(job_id))

    def data_job(request: gr.Request) -> str:
        auth.require(request, *ADMINS)
        return job_status_text(store.latest_generation_job())

    def data_job_open(request: gr.Request) -> tuple[str, gr.Timer]:
        return data_job(request), gr.Timer(active=True)

    def data_job_cancel(request: gr.Request) -> str:
        admin = auth.require(request, *ADMINS)
        job = store.latest_generation_job()
        if job is None or not services.jobs.cancel(job.id):
            return "No generation job is running. " + job_status_text(job)
        store.audit(admin.username, "cancel_generation_job", {"job": job.id})
        return job_status_text(store.get_generation_job(job.id))

    def data_candidates(request: gr.Request) -> dict:
        auth.require(request, *ADMINS)
        choices = [v for v in services.servable_versions() if v != services.models.active]
        return gr.update(choices=choices, value=choices[1] if len(choices) > 1 and choices[0] == BASE else
                         (choices[0] if choices else None))

    def data_export(kind: str, request: gr.Request) -> str:
        admin = auth.require(request, *ADMINS)
        path, rows = export_to_folder(store, kind, services.data_dir / "exports")
        store.audit(admin.username, "export", {"kind": kind, "rows": rows, "path": str(path)})
        return str(path)

    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("#### Import\nJSONL, CSV or Parquet. **All or nothing**: any bad line aborts the import "
                        "and the error names the line and field.")
            upload = gr.File(label="File", file_types=[".jsonl", ".csv", ".parquet"], type="filepath")
            with gr.Row():
                kind = gr.Radio(list(IMPORT_KINDS), value="prompts", label="Kind")
                split = gr.Radio(["auto", *SPLITS], value="auto", label="Split (auto: a share of new "
                                 "prompts is held out by text hash; held-out prompts feed the evaluation gate)")
            preview_md = gr.Markdown(elem_id="import-preview")
            preview_table = gr.Dataframe(interactive=False, wrap=True, max_height=240)
            import_btn = gr.Button("Import", variant="primary")
            import_result = gr.Markdown()
        with gr.Column(scale=2):
            table = gr.Dataframe(pd.DataFrame(columns=["table", "rows"]), label="Store contents", interactive=False)
            refresh = gr.Button("↻ Refresh", size="sm")
    gr.Markdown("#### Generate candidates (on-policy)\nAnswers from the versions being trained and evaluated go "
                "into the review queue: every vote is training data *and* an evaluation of those versions.")
    with gr.Row():
        mode = gr.Radio(REVIEW_MODES, value="pairwise", label="Review task", scale=3)
        candidate = gr.Dropdown([BASE], value=BASE, label="Candidate (B side)", scale=2, allow_custom_value=True)
        samples = gr.Slider(3, 5, value=3, step=1, label="N for ranking", scale=1)
    with gr.Row():
        prompts = gr.Radio(list(SPLITS), value="train", label="Prompts (only those without answers yet)")
        max_new_tokens = gr.Slider(16, 512, value=128, step=16, label="Max new tokens")
        temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Temperature")
    with gr.Row():
        generate = gr.Button("Generate", variant="primary", scale=3)
        cancel_job = gr.Button("Cancel job", scale=1)
    generate_result = gr.Markdown()
    job_timer = gr.Timer(2.0, active=False)  # started when an admin opens the tab
    gr.Markdown("#### Export")
    with gr.Row():
        export_kind = gr.Dropdown(export_names(), value="preferences", label="Dataset or table", scale=2)
        export_btn = gr.Button("Export JSONL", scale=1)
        export_file = gr.File(label="Download", scale=2)

    gr.on([refresh.click, tab.select], data_counts, None, table, api_name=auth.endpoint("data_counts", *ADMINS))
    gr.on([upload.change, kind.change], data_preview, [upload, kind], [preview_md, preview_table],
          api_name=auth.endpoint("data_preview", *ADMINS))
    import_btn.click(data_import, [upload, kind, split], [import_result, table],
                     api_name=auth.endpoint("data_import", *ADMINS))
    generate.click(data_generate, [mode, candidate, samples, prompts, max_new_tokens, temperature],
                   generate_result, api_name=auth.endpoint("data_generate", *ADMINS))
    job_timer.tick(data_job, None, generate_result, api_name=auth.endpoint("data_job", *ADMINS),
                   show_progress="hidden")
    tab.select(data_job_open, None, [generate_result, job_timer], api_name=auth.endpoint("data_job_open", *ADMINS))
    cancel_job.click(data_job_cancel, None, generate_result, api_name=auth.endpoint("data_job_cancel", *ADMINS))
    candidate.focus(data_candidates, None, candidate, api_name=auth.endpoint("data_candidates", *ADMINS))
    export_btn.click(data_export, export_kind, export_file, api_name=auth.endpoint("data_export", *ADMINS))
