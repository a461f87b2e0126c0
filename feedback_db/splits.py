"""Which prompts are held out: a deterministic hash of the prompt text against a share (default 10 %).

The same text always lands on the same side, so re-importing a file, or the same question asked again in chat,
never moves a prompt between train and held-out. An explicit split (import field, `--split`) still wins.
The hash must never change: stores rely on it staying where it put their prompts.
"""

from __future__ import annotations

import hashlib

DEFAULT_HELDOUT_SHARE = 0.10


def hash_unit(text: str) -> float:
    """A stable number in [0, 1) for the prompt text (sha256 of the stripped UTF-8 text)."""
    digest = hashlib.sha256(text.strip().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_for(text: str, share: float = DEFAULT_HELDOUT_SHARE) -> str:
    """`heldout` for about `share` of all texts, `train` for the rest."""
    check_share(share)
    return "heldout" if hash_unit(text) < share else "train"


def check_share(share: float) -> None:
    if not 0 <= share < 1:
        raise ValueError(f"heldout_share must be in [0, 1), got {share}")
