"""Prompts and responses, imported training data (demonstrations, preference pairs, unpaired labels) and the
admin's data browser (browse, exclude/restore, move between splits)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from feedback_db import browse
from feedback_db.models import (
    Comparison,
    Correction,
    CriterionAnswer,
    Demonstration,
    PreferencePair,
    Prompt,
    Ranking,
    Rating,
    Response,
    Snapshot,
    UnpairedLabel,
)
from feedback_db.splits import split_for
from feedback_db.store.base import StoreBase, check, check_choice, now, valid_id
from feedback_db.vocab import SPLITS


class PromptsMixin(StoreBase):
    """Prompts, responses, imported rows, the data browser."""

    # prompts and responses ---

    def add_prompt(
        self,
        text: str,
        source: str = "manual",
        tags: Sequence[str] = (),
        split: str | None = None,
        messages: list[dict] | None = None,
    ) -> int:
        """A new prompt; without `split` it is held out by a hash of its text (`feedback_db.splits`)."""
        check(bool(text.strip()), "prompt text must not be empty")
        split = split or split_for(text, self.heldout_share)
        check_choice("split", split, SPLITS)
        row = {"text": text, "source": source, "tags": json.dumps(list(tags)), "split": split, "created": now()}
        row["messages"] = json.dumps(messages) if messages else None
        return self._insert("prompts", row)

    def get_prompt(self, prompt_id: int) -> Prompt | None:
        valid = valid_id(prompt_id)
        return self._one(_prompt, "SELECT * FROM prompts WHERE id = ?", (prompt_id,)) if valid else None

    def list_prompts(self, split: str | None = None, snapshot: Snapshot | None = None) -> list[Prompt]:
        return [_prompt(r) for r in self._rows("prompts", snapshot, split=split)]

    def prompts_lacking_answers(self, versions: Sequence[str], split: str = "train") -> list[int]:
        """Ids of the `split` prompts (in id order) that lack an answer from at least one of `versions`."""
        wanted = sorted(set(versions))
        marks = ", ".join("?" for _ in wanted)
        rows = self._query(
            "SELECT p.id FROM prompts p WHERE p.split = ? AND (SELECT COUNT(DISTINCT r.model_version) "
            f"FROM responses r WHERE r.prompt_id = p.id AND r.model_version IN ({marks})) < ? ORDER BY p.id",
            [split, *wanted, len(wanted)],
        )
        return [r["id"] for r in rows]

    def add_response(self, prompt_id: int, text: str, model_version: str, settings: dict | None = None) -> int:
        row = {"prompt_id": prompt_id, "text": text, "model_version": model_version}
        return self._insert("responses", {**row, "settings": json.dumps(settings or {}), "created": now()})

    def get_response(self, response_id: int) -> Response | None:
        valid = valid_id(response_id)
        return self._one(_response, "SELECT * FROM responses WHERE id = ?", (response_id,)) if valid else None

    def list_responses(self, prompt_id: int | None = None, snapshot: Snapshot | None = None) -> list[Response]:
        return [_response(r) for r in self._rows("responses", snapshot, prompt_id=prompt_id)]

    def _require_response(self, response_id: int) -> Response:
        response = self.get_response(response_id)
        if response is None:
            raise KeyError(f"no response {response_id}")
        return response

    # imported training data ---

    def add_demonstration(self, prompt_id: int, completion: str, source: str = "import") -> int:
        check(bool(completion.strip()), "demonstration completion must not be empty")
        row = {"prompt_id": prompt_id, "completion": completion, "source": source, "created": now()}
        return self._insert("demonstrations", row)

    def list_demonstrations(self, snapshot: Snapshot | None = None) -> list[Demonstration]:
        return [Demonstration(**dict(r)) for r in self._rows("demonstrations", snapshot)]

    def add_preference_pair(self, prompt_id: int, chosen: str, rejected: str, source: str = "import") -> int:
        row = {"prompt_id": prompt_id, "chosen": chosen, "rejected": rejected, "source": source, "created": now()}
        return self._insert("preference_pairs", row)

    def list_preference_pairs(self, snapshot: Snapshot | None = None) -> list[PreferencePair]:
        return [PreferencePair(**dict(r)) for r in self._rows("preference_pairs", snapshot)]

    def add_unpaired_label(self, prompt_id: int, completion: str, label: bool, source: str = "import") -> int:
        row = {"prompt_id": prompt_id, "completion": completion, "label": int(label), "source": source}
        return self._insert("unpaired_labels", {**row, "created": now()})

    def list_unpaired_labels(self, snapshot: Snapshot | None = None) -> list[UnpairedLabel]:
        return [
            UnpairedLabel(**{**dict(r), "label": bool(r["label"])}) for r in self._rows("unpaired_labels", snapshot)
        ]

    # data browser ---

    def browse_prompts(self, f: browse.BrowseFilter, page: int = 1,
                       page_size: int = browse.PAGE_SIZE) -> tuple[list[browse.BrowseRow], int]:
        if f.split is not None:
            check_choice("split", f.split, SPLITS)
        return browse.browse(self._db.get(), f, page, page_size)

    def prompt_feedback(self, prompt_id: int) -> dict[str, list]:
        """Everything judged about one prompt: responses, ratings, comparisons, rankings, corrections, criteria
        answers and exclusions (each a list of the store's dataclasses or, for exclusions, dicts)."""
        by_response = "response_id IN (SELECT id FROM responses WHERE prompt_id = ?)"
        q = self._query
        return {
            "responses": self.list_responses(prompt_id),
            "ratings": [Rating(**dict(r)) for r in q(f"SELECT * FROM ratings WHERE {by_response}", (prompt_id,))],
            "comparisons": [Comparison(**dict(r)) for r in q("SELECT * FROM comparisons WHERE prompt_id = ?",
                                                             (prompt_id,))],
            "rankings": [Ranking(**{**dict(r), "response_ids": json.loads(r["response_ids"])})
                         for r in q("SELECT * FROM rankings WHERE prompt_id = ?", (prompt_id,))],
            "corrections": [Correction(**dict(r)) for r in q(f"SELECT * FROM corrections WHERE {by_response}",
                                                             (prompt_id,))],
            "criteria": [CriterionAnswer(**dict(r)) for r in q("SELECT * FROM criterion_answers WHERE prompt_id = ?",
                                                               (prompt_id,))],
            "exclusions": [dict(r) for r in q("SELECT * FROM prompt_exclusions WHERE prompt_id = ? ORDER BY id",
                                              (prompt_id,))],
        }

    def exclude_prompt(self, prompt_id: int, username: str, reason: str) -> None:
        """Keep a prompt and all its rows out of training (soft: nothing is deleted; `restore_prompt` undoes it)."""
        check(bool(reason.strip()), "say why the prompt is excluded")
        with self._db.write():
            check(self.get_prompt(prompt_id) is not None, f"no prompt {prompt_id}")
            check(not self._query("SELECT 1 FROM prompt_exclusions WHERE prompt_id = ? AND lifted IS NULL",
                                   (prompt_id,)), f"prompt {prompt_id} is already excluded")
            row = {"prompt_id": prompt_id, "reason": reason.strip(), "username": username, "created": now()}
            self._insert("prompt_exclusions", row)

    def restore_prompt(self, prompt_id: int, username: str) -> None:
        changed = self._update("UPDATE prompt_exclusions SET lifted = ?, lifted_by = ? WHERE prompt_id = ? AND "
                               "lifted IS NULL", (now(), username, prompt_id))
        check(changed > 0, f"prompt {prompt_id} is not excluded")

    def move_prompt(self, prompt_id: int, split: str, username: str) -> None:
        """Move a prompt between train and held-out, recorded in `prompt_split_moves`."""
        check_choice("split", split, SPLITS)
        with self._db.write():
            prompt = self.get_prompt(prompt_id)
            check(prompt is not None, f"no prompt {prompt_id}")
            check(prompt.split != split, f"prompt {prompt_id} is already in {split}")
            self._update("UPDATE prompts SET split = ? WHERE id = ?", (split, prompt_id))
            row = {"prompt_id": prompt_id, "from_split": prompt.split, "to_split": split}
            self._insert("prompt_split_moves", {**row, "reason": f"data browser ({username})", "created": now()})


def _prompt(row: sqlite3.Row) -> Prompt:
    messages = json.loads(row["messages"]) if row["messages"] else None
    return Prompt(
        row["id"], row["text"], row["source"], tuple(json.loads(row["tags"])), row["split"], row["created"], messages
    )


def _response(row: sqlite3.Row) -> Response:
    return Response(**{**dict(row), "settings": json.loads(row["settings"])})
