"""Arena: blind battles between two servable versions, for everyone who can chat.

One prompt goes to two versions picked at random (the active version and the newest candidate three times as
likely as the others, so the battles that decide a promotion come up most), both answers are decoded in one
batch and shown side by side without names, the vote is stored as a comparison with source `arena` (the prompt
keeps the whole conversation, each answer its version; a viewer's vote `viewer_arena`, left out of training unless
an admin includes viewers' chat feedback), and only then are the names shown. `record_vote` is the
one place that writes a battle.
"""

import random
from dataclasses import dataclass

from feedback_db.store import FeedbackStore

FAVOURED_WEIGHT = 3.0


@dataclass(frozen=True)
class Battle:
    """What the server showed one user: kept in the session (gr.State), never taken from the client."""

    messages: list[dict]  # the conversation both versions answered
    versions: tuple[str, str]  # A, B
    answers: tuple[str, str]


def pick_versions(servable: list[str], active: str, newest_candidate: str | None,
                  rng: random.Random) -> tuple[str, str]:
    """Two different versions, weighted toward `active` and `newest_candidate`; which one is A is random too."""
    if len(servable) < 2:
        raise ValueError("The arena needs two servable versions and only the base model exists yet: train a round "
                         "first (or vote on two sampled answers in the Review tab).")
    weights = [FAVOURED_WEIGHT if v in (active, newest_candidate) else 1.0 for v in servable]
    first = rng.choices(range(len(servable)), weights)[0]
    rest = [i for i in range(len(servable)) if i != first]
    second = rng.choices(rest, [weights[i] for i in rest])[0]
    pair = [servable[first], servable[second]]
    rng.shuffle(pair)
    return pair[0], pair[1]


def newest_candidate(store: FeedbackStore) -> str | None:
    candidates = [v for v in store.list_versions() if v.status == "candidate" and v.method != "reward"]
    return max(candidates, key=lambda v: v.id).name if candidates else None


def record_vote(store: FeedbackStore, battle: Battle, winner: str, username: str, viewer: bool = False) -> int:
    """Store the battle (prompt with its conversation, both answers, the comparison) in one transaction. A viewer's
    vote has source `viewer_arena`: like viewers' chat thumbs, it trains only when an admin includes viewers' chat
    feedback in a round."""
    with store.transaction():
        prompt_id = store.add_prompt(battle.messages[-1]["content"], source="arena", messages=battle.messages)
        ids = [store.add_response(prompt_id, text, version, {"source": "arena"})
               for text, version in zip(battle.answers, battle.versions, strict=True)]
        return store.add_comparison(ids[0], ids[1], winner, username,
                                    source="viewer_arena" if viewer else "arena")
