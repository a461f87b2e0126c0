"""Admin › Rounds: pick stages and technique, check the data, start/cancel/resume a round, live progress and plots.

Training runs in its own process (training.runner); this tab only reads the store, every 2 s, so progress and
plots survive a reload and show the same in a second browser.
"""

import gradio as gr
import pandas as pd

from feedback_db.datasets import data_check
from feedback_db.vocab import STAGES
from webapp import limits
from webapp.auth import ADMINS

RUN_COLUMNS = ["id", "status", "stage", "stages", "technique", "by", "versions", "created", "finished", "error"]
PLOTS = {  # plot -> metric-name fragments it shows (names as TRL logs them, plus the callback's tokens_per_s)
    "Loss": ("loss",),
    "Reward accuracy / margins": ("accurac", "margin"),
    "KL": ("kl",),
    "Tokens/s": ("tokens_per_s",),
}
ACTIVE_RUN = ("queued", "running")


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def stage_timeline(run, metrics: list) -> str:
    """The round's stages as done / running / queued, the current one with step/total, elapsed, ETA and tokens/s
    (what StoreProgressCallback logged last for it)."""
    latest = {m.stage: m.metrics for m in metrics if "total_steps" in m.metrics}
    stages = [*run.stages, *(["evaluate"] if run.config.get("evaluate") else [])]
    parts = []
    for i, stage in enumerate(stages):
        if i < len(run.versions) or (stage == "evaluate" and run.status == "succeeded"):
            parts.append(f"✅ {stage}" + (f" ({run.versions[i]})" if i < len(run.versions) else ""))
        elif stage == run.stage and run.status in ("failed", "cancelled", "interrupted"):
            parts.append(f"❌ {stage} ({run.status}{_progress(latest.get(stage))})")
        elif stage == run.stage:
            parts.append(f"⏳ **{stage}**{_progress(latest.get(stage))}")
        else:
            parts.append(f"⏸ {stage} (queued)")
    return " → ".join(parts)


def _progress(m: dict | None) -> str:
    if not m:
        return ""
    speed = f" · {m['tokens_per_s']:.0f} tokens/s" if m.get("tokens_per_s") else ""
    return (f" · step {m['step']}/{m['total_steps']} · {clock(m.get('elapsed_s'))} elapsed · "
            f"ETA {clock(m.get('eta_s'))}{speed}")


def metric_frames(metrics: list) -> list[pd.DataFrame]:
    """RunMetric rows → one long (step, value, metric) frame per plot."""
    rows = [(m.step, value, f"{m.stage}/{key}") for m in metrics for key, value in m.metrics.items()]
    frame = pd.DataFrame(rows, columns=["step", "value", "metric"])
    return [frame[frame.metric.str.lower().str.contains("|".join(parts))] for parts in PLOTS.values()]


def build_rounds_tab(services) -> gr.Timer:
    """Returns the progress timer; the UI starts it for admins only."""
    auth, store = services.auth, services.store

    def runs_table() -> pd.DataFrame:
        rows = [[r.id, r.status, r.stage or "", ",".join(r.stages), r.config.get("technique", ""), r.username,
                 ",".join(r.versions), r.created[:19], (r.finished or "")[:19], r.error or ""]
                for r in store.list_runs()]
        return pd.DataFrame(rows, columns=RUN_COLUMNS)

    def data_check_text(stages: list[str], viewer_chat: bool) -> tuple[bool, str]:
        lines, ok = [], True
        snapshot = store.snapshot(include_viewer_chat=bool(viewer_chat))
        for stage in stages:
            check = data_check(store, stage, snapshot)
            ok &= check.ok
            counts = ", ".join(f"{k} {v}" for k, v in check.counts.items() if v)
            lines.append(f"\n{'✅' if check.ok else '❌'} **{stage}**: {counts or 'no data'}\n")
            lines += [f"  - ❌ {p}" for p in check.problems] + [f"  - ⚠️ {w}" for w in check.warnings]
        return ok, "\n".join(lines) or "Pick at least one stage."

    # `viewer_chat` and `report_to` are gr.States fed by their inputs (not API parameters, so the endpoints keep
    # their shape); rounds_start checks them like any other value a client sends
    def rounds_check(stages: list[str], request: gr.Request, viewer_chat: bool = False) -> str:
        auth.require(request, *ADMINS)
        return data_check_text(stages, viewer_chat)[1]

    def rounds_start(stages: list[str], technique: str, freeze_top_n: float, parent: str, max_steps: float,
                     learning_rate: float | None, lora_r: float, beta: float, evaluate: bool, auto_promote: bool,
                     request: gr.Request, viewer_chat: bool = False,
                     report_to: str = "tensorboard") -> tuple[str, pd.DataFrame, dict]:
        admin = auth.require(request, *ADMINS)
        limits.check_round_form(max_steps, learning_rate, lora_r, beta, freeze_top_n)
        report_to = limits.check_report_to(report_to)
        ok, report = data_check_text(stages, viewer_chat)
        if not stages or not ok:
            raise gr.Error("Data check failed; fix the data or the stages first.")
        if any(r.status in ACTIVE_RUN for r in store.list_runs()):
            raise gr.Error("A round is already running: wait for it or cancel it.")
        cfg = services.rounds.config(stages, technique, int(freeze_top_n), parent, int(max_steps), learning_rate,
                                     int(lora_r), float(beta), evaluate, auto_promote, admin.username,
                                     include_viewer_chat=bool(viewer_chat), report_to=report_to)
        run_id = services.rounds.start(cfg)
        store.audit(admin.username, "start_round", {"run_id": run_id, "stages": stages, "technique": technique,
                                                    "include_viewer_chat": bool(viewer_chat),
                                                    "report_to": report_to})
        return f"Started run {run_id}.\n\n{report}", runs_table(), gr.update(value=run_id)

    def rounds_cancel(run_id: float | None, request: gr.Request) -> pd.DataFrame:
        admin = auth.require(request, *ADMINS)
        if not run_id:
            raise gr.Error("Pick a run id.")
        if not services.rounds.cancel(int(run_id)):
            raise gr.Error(f"Run {int(run_id)} has already finished.")
        store.audit(admin.username, "cancel_round", {"run_id": int(run_id)})
        gr.Info(f"Cancelling run {int(run_id)}…")
        return runs_table()

    def rounds_resume(run_id: float | None, request: gr.Request) -> pd.DataFrame:
        admin = auth.require(request, *ADMINS)
        if not run_id:
            raise gr.Error("Pick a run id.")
        if any(r.status in ACTIVE_RUN for r in store.list_runs()):
            raise gr.Error("A round is already running: wait for it or cancel it.")
        try:
            services.rounds.resume(int(run_id))
        except (KeyError, ValueError) as err:
            raise gr.Error(str(err).strip("'\"")) from err
        store.audit(admin.username, "resume_round", {"run_id": int(run_id)})
        gr.Info(f"Resuming run {int(run_id)}: finished stages are kept, the interrupted one continues from its "
                "last checkpoint.")
        return runs_table()

    def rounds_progress(run_id: float | None, request: gr.Request) -> tuple:
        auth.require(request, *ADMINS)
        runs = store.list_runs()
        if not run_id and runs:  # 0 / blank: follow the newest run
            run_id = max(r.id for r in runs)
        if not run_id:
            return runs_table(), "No runs yet.", "", *metric_frames([])
        run = store.get_run(int(run_id))
        status = f"**Run {run.id}**: {run.status}" + (f" · stage **{run.stage}**" if run.stage else "")
        metrics = store.run_metrics(run.id)
        status += f"\n\n{stage_timeline(run, metrics)}" + (f"\n\n❌ {run.error}" if run.error else "")
        return (runs_table(), status, services.rounds.log(run.id) or run.log_tail,
                *metric_frames(metrics))

    with gr.Row():
        with gr.Column(scale=3):
            stages = gr.CheckboxGroup(list(STAGES), value=["sft", "reward", "dpo"], label="Stages (in order)")
            with gr.Row():
                technique = gr.Radio([("LoRA", "lora"), ("Full", "full"), ("Top-N layers", "freeze")], value="lora",
                                     label="Technique")
                freeze_top_n = gr.Number(4, label="N (top layers trained)", precision=0, visible=False)
                parent = gr.Dropdown(["active", "base"], value="active", label="Start from", allow_custom_value=True)
            with gr.Row():
                max_steps = gr.Number(-1, label="Max steps per stage (-1 = recipe default)", precision=0)
                learning_rate = gr.Number(None, label="Learning rate (0 = recipe default)")
                lora_r = gr.Number(16, label="LoRA rank", precision=0)
                beta = gr.Number(0.1, label="DPO/KTO beta")
                report_to_box = gr.Dropdown(limits.report_to_choices(), value="tensorboard",
                                            label="Experiment tracking (report_to)")
            with gr.Row():
                evaluate = gr.Checkbox(True, label="Run the evaluation gate")
                auto_promote = gr.Checkbox(True, label="Promote automatically when the gate passes")
                viewer_chat_box = gr.Checkbox(False, label="Include viewers' chat feedback: 👍/👎 and arena votes "
                                                           "(off: only reviewers' and admins' feedback trains)")
            gr.Markdown("The gate judges on held-out prompts: reviewers vote on its A/B items when there are "
                        "reviewers (Admin › Versions shows the votes it still waits for). A pass needs the 95 % lower "
                        "bound of "
                        "the win-rate above 0.5 over 20+ decisive votes (identical answers and split votes are ties). "
                        "It never auto-promotes when it evaluated on training data or on too few held-out prompts, "
                        "when an automatic judge decided (it can be fooled; also refused below its accuracy floor), "
                        "after an online RL round (reward hacking), or when held-out preference accuracy dropped: "
                        "promote those by hand after reading the gate report.")
            viewer_chat = gr.State(False)
            report_to = gr.State("tensorboard")
            with gr.Row():
                check = gr.Button("Check data")
                start = gr.Button("Start round", variant="primary")
        with gr.Column(scale=2):
            check_md = gr.Markdown("Press **Check data** to see what each stage would train on.")
    with gr.Row():
        run_id = gr.Number(None, label="Run (0 = newest)", precision=0, scale=1)
        cancel = gr.Button("Cancel run", variant="stop", scale=1)
        resume = gr.Button("Resume run", scale=1)
        status = gr.Markdown()
    plots = []
    with gr.Row():
        for title in PLOTS:
            plots.append(gr.LinePlot(x="step", y="value", color="metric", title=title, height=240))
    with gr.Accordion("Log", open=False):
        log = gr.Code(language=None, lines=14, max_lines=14)
    runs = gr.Dataframe(pd.DataFrame(columns=RUN_COLUMNS), label="Runs", interactive=False)

    technique.change(lambda t: gr.update(visible=t == "freeze"), technique, freeze_top_n, api_visibility="private")
    viewer_chat_box.change(lambda on: bool(on), viewer_chat_box, viewer_chat, api_visibility="private")
    report_to_box.change(lambda value: value, report_to_box, report_to, api_visibility="private")
    gr.on([check.click, stages.change], rounds_check, [stages, viewer_chat], check_md,
          api_name=auth.endpoint("rounds_check", *ADMINS))
    start.click(rounds_start, [stages, technique, freeze_top_n, parent, max_steps, learning_rate, lora_r, beta,
                               evaluate, auto_promote, viewer_chat, report_to], [check_md, runs, run_id],
                api_name=auth.endpoint("rounds_start", *ADMINS))
    cancel.click(rounds_cancel, run_id, runs, api_name=auth.endpoint("rounds_cancel", *ADMINS))
    resume.click(rounds_resume, run_id, runs, api_name=auth.endpoint("rounds_resume", *ADMINS))
    timer = gr.Timer(2.0, active=False)
    timer.tick(rounds_progress, run_id, [runs, status, log, *plots], show_progress="hidden",
               api_name=auth.endpoint("rounds_progress", *ADMINS))
    return timer
