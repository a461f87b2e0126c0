"""Store work of one review click at scale, piece by piece, in-process (no HTTP, no Gradio).

    python -m bench.review_click [--quick] [--prompts 21000] [--reviewers 32]

Seeds a fresh store: `--prompts` prompts (quick: 5,000) with two answers from two versions (a blind A/B item each,
and two single-answer items), two comparisons and two ratings on each of the first 10,000 prompts (two reviewers
each, random verdicts), `--reviewers` reviewers. Then times, median of 5 calls, what the review tab does after a
judgment: the next item and the queue progress per mode, and the reviewer's own counts and agreement (`mine()`),
next to the whole-store computations that `mine()` used before (`feedback_counts`, `agreement` for 3 kinds), and
checks that the reviewer-scoped agreement equals the whole-store one.
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import data_dir, report
from feedback_db.agreement import agreement, reviewer_agreement
from feedback_db.store import FeedbackStore


def timed(fn, repeats: int = 5) -> float:
    """Median wall time of `fn()` in milliseconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def seed(store: FeedbackStore, prompts: int, reviewers: list[str]) -> None:
    rng = random.Random(0)
    pairs = []
    with store.transaction():
        for user in reviewers:
            store.create_user(user, "bench-password-1", "reviewer")
        for i in range(prompts):
            prompt = store.add_prompt(f"Bench question {i}?", source="bench")
            pairs.append((store.add_response(prompt, f"a {i}", "base"), store.add_response(prompt, f"b {i}", "v1")))
        for a, b in pairs[:10_000]:
            for user in rng.sample(reviewers, 2):
                store.add_comparison(a, b, rng.choice(["a", "b", "tie"]), user)
            for user in rng.sample(reviewers, 2):
                store.add_rating(a, user, thumbs=rng.choice([0, 1]), likert=rng.randint(1, 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 prompts instead of 21,000.")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--reviewers", type=int, default=32)
    args = parser.parse_args()
    args.prompts = args.prompts or (5_000 if args.quick else 21_000)
    judged = 2 * min(args.prompts, 10_000)
    reviewers = [f"r{i:02d}" for i in range(args.reviewers)]
    with tempfile.TemporaryDirectory(prefix="review-click-", dir=data_dir()) as folder:
        store = FeedbackStore(Path(folder) / "tuneloop.db")
        seed(store, args.prompts, reviewers)
        user = reviewers[5]
        rows = []
        for mode in ("single", "pairwise", "ranking"):
            rows.append([f"next item ({mode})", timed(lambda mode=mode: store.next_item(user, mode))])
            rows.append([f"queue progress ({mode})", timed(lambda mode=mode: store.queue_progress(user, mode))])
        rows.append(["mine(): reviewer_counts", timed(lambda: store.reviewer_counts(user))])
        rows.append(["mine(): reviewer_agreement (3 kinds)", timed(lambda: reviewer_agreement(store, user))])
        rows.append(["before: feedback_counts (every user)", timed(store.feedback_counts, 3)])
        rows.append(["before: agreement, 3 kinds (every reviewer)",
                     timed(lambda: [agreement(store, k) for k in ("pairwise", "thumbs", "likert")], 3)])
        full = {k: agreement(store, k).per_reviewer.get(user) for k in ("pairwise", "thumbs", "likert")}
        same = reviewer_agreement(store, user) == full
        store.close()
    report("Review click: store work per piece (bench/review_click.py)",
           f"{args.prompts} prompts x 2 answers, {judged} comparisons, {judged} ratings, {args.reviewers} reviewers; "
           "in-process, median of 5 calls (3 for the whole-store rows)",
           ["piece", "ms"], rows,
           [f"Reviewer-scoped agreement equals the whole-store computation: {same} ({full})."])


if __name__ == "__main__":
    main()
