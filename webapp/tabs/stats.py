"""Stats (everyone, read-only): the version leaderboard, feedback over time, reviewer agreement, blind A/B win-rates,
reward-model accuracy."""

import gradio as gr
import pandas as pd

from feedback_db import agreement as agreement_stats
from feedback_db.leaderboard import EXPLANATION, leaderboard
from feedback_db.stats import win_rates as version_win_rates
from webapp.auth import EVERYONE

AGREEMENT_KINDS = ("thumbs", "likert", "pairwise")
BOARD_COLUMNS = ["rank", "version", "rating", "95% interval", "votes", "wins", "losses", "ties"]
# below this many votes a version's bootstrap interval is not shown: resampling 2 unanimous votes gives "1140 – 1140",
# a certainty that 2 votes do not have
MIN_INTERVAL_VOTES = 10


def interval_text(low: float, high: float, votes: int) -> str:
    if votes < MIN_INTERVAL_VOTES:
        return f"— (under {MIN_INTERVAL_VOTES} votes)"
    return f"{low:.0f} – {high:.0f}"


def board_frames(store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard and its win matrix (row version's wins / decisive votes against the column version)."""
    board = leaderboard(store)
    rows = [[i + 1, r.version, round(r.rating), interval_text(r.low, r.high, r.votes), r.votes, r.wins, r.losses,
             r.ties] for i, r in enumerate(board.ratings)]
    order = [r.version for r in board.ratings]
    matrix = [[row, *("—" if row == col else _cell(*board.matrix[row][col]) for col in order)] for row in order]
    return pd.DataFrame(rows, columns=BOARD_COLUMNS), pd.DataFrame(matrix, columns=["wins of ↓ against →", *order])


def _cell(wins: int, decisive: int) -> str:
    return f"{wins}/{decisive} ({wins / decisive:.0%})" if decisive else "–"


def build_stats_tab(services, tab: gr.Tab) -> None:
    auth, store = services.auth, services.store

    def feedback() -> tuple[pd.DataFrame, pd.DataFrame]:
        counts = pd.DataFrame([vars(c) for c in store.feedback_counts()], columns=["day", "mode", "username", "count"])
        per_reviewer = counts.pivot_table(index="username", columns="mode", values="count", aggfunc="sum",
                                          fill_value=0).reset_index() if len(counts) else counts
        return counts, per_reviewer

    def agreement() -> tuple[pd.DataFrame, pd.DataFrame]:
        results = {kind: agreement_stats.agreement(store, kind) for kind in AGREEMENT_KINDS}
        overall = pd.DataFrame([[k, a.method, a.overall, a.items, a.disagreements] for k, a in results.items()],
                               columns=["kind", "method", "value", "items", "disagreements"])
        per_reviewer = pd.DataFrame([[k, user, share] for k, a in results.items() for user, share in
                                     a.per_reviewer.items()], columns=["kind", "reviewer", "agrees with majority"])
        return overall, per_reviewer

    def win_rates() -> pd.DataFrame:
        rows = [[w.version, w.win_rate, w.wins, w.losses, w.ties] for w in version_win_rates(store)]
        return pd.DataFrame(rows, columns=["version", "win_rate", "wins", "losses", "ties"])

    def reward_accuracy() -> pd.DataFrame:
        rows = [[v.name, key, value] for v in sorted(store.list_versions(), key=lambda v: v.id)
                for key, value in v.metrics.items() if "accuracy" in key and isinstance(value, int | float)
                and not isinstance(value, bool)]
        return pd.DataFrame(rows, columns=["version", "metric", "value"])

    def stats_refresh(request: gr.Request) -> tuple:
        auth.require(request, *EVERYONE)
        counts, per_reviewer = feedback()
        return *board_frames(store), counts, per_reviewer, *agreement(), win_rates(), reward_accuracy()

    refresh = gr.Button("↻ Refresh", size="sm")
    gr.Markdown(f"#### Leaderboard\n{EXPLANATION} Intervals are shown from {MIN_INTERVAL_VOTES} votes on.")
    with gr.Row():
        board = gr.Dataframe(pd.DataFrame(columns=BOARD_COLUMNS), label="Versions by rating", interactive=False,
                             elem_id="leaderboard", scale=3)
        matrix = gr.Dataframe(label="Win matrix", interactive=False, elem_id="win-matrix", scale=2)
    with gr.Row():
        counts_plot = gr.BarPlot(x="day", y="count", color="mode", title="Judgments per day and mode", height=260)
        per_reviewer = gr.Dataframe(label="Judgments per reviewer", interactive=False)
    with gr.Row():
        agreement_table = gr.Dataframe(label="Agreement (Cohen's kappa / Krippendorff's alpha)", interactive=False)
        reviewer_agreement = gr.Dataframe(label="Per reviewer: share agreeing with the majority", interactive=False)
    with gr.Row():
        win_plot = gr.BarPlot(x="version", y="win_rate", title="Win-rate in blind A/B votes", y_lim=[0, 1], height=260)
        reward_plot = gr.BarPlot(x="version", y="value", color="metric",
                                 title="Reward-model / preference accuracy per version",
                                 y_lim=[0, 1], height=260)
    outputs = [board, matrix, counts_plot, per_reviewer, agreement_table, reviewer_agreement, win_plot, reward_plot]
    gr.on([refresh.click, tab.select], stats_refresh, None, outputs, api_name=auth.endpoint("stats", *EVERYONE))
