"""The evaluation gate as the app shows it: a version's gate with its human sign-off votes counted so far, and the
report of everything the gate saw (training.evaluate writes the automatic judges' reports; human gates are read
from the A/B votes). Deciding a waiting human gate (and promoting) is Services.check_gates, in the poller.
"""

import json
from pathlib import Path

from feedback_db.consensus import pair_votes
from feedback_db.store import FeedbackStore
from training.gate import human_verdict


def gate_status(store: FeedbackStore, name: str) -> dict | None:
    """The version's gate as training.evaluate stored it; a waiting human sign-off gate with its verdict so far
    and `missing_votes`."""
    version = store.get_version(name)
    gate = version.metrics.get("gate") if version else None
    if not gate or gate.get("mode") != "human" or gate.get("status") != "waiting":
        return gate
    result, missing = human_verdict(gate, pair_votes(store.list_comparisons(), []))
    return {**gate, "missing_votes": missing, "verdict": result.as_dict()}


def gate_report(store: FeedbackStore, name: str) -> dict:
    """Everything the gate saw: its settings, the verdict, and per prompt both answers and the judgment(s)."""
    version = store.get_version(name)
    if version is None:
        raise KeyError(f"There is no version named {name!r}.")
    gate = gate_status(store, name)
    if not gate:
        return {"gate": "not evaluated", "items": []}
    if gate.get("mode") != "human":
        path = Path(version.path) / "gate_report.json"
        return json.loads(path.read_text()) if path.is_file() else {"gate": gate, "items": []}
    votes = pair_votes(store.list_comparisons(), [])
    items = []
    for prompt_id, pair in zip(gate["prompt_ids"], gate["pairs"], strict=True):
        item = {"prompt": store.get_prompt(prompt_id).text}
        if pair:
            candidate, other = (store.get_response(i) for i in pair)
            by_user = votes.get((min(pair), max(pair)), {})
            item |= {"candidate": candidate.text, "compared": other.text,
                     "votes": {u: "candidate" if j == candidate.id else "compared" if j == other.id else j
                               for u, j in by_user.items()}}
        else:
            item["judgment"] = "tie (identical answers)"
        items.append(item)
    return {"gate": gate, "items": items}
