"""Dataset builders: TRL formats, majority per item, held-out isolation, snapshots, data checks."""

import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback_db import FeedbackStore
from feedback_db.datasets import (
    build_kto_dataset,
    build_preference_dataset,
    build_sft_dataset,
    data_check,
    kto_rows,
    preference_rows,
    sft_rows,
)

_files = itertools.count()


def _pair_world(store: FeedbackStore) -> tuple[int, int, int]:
    p = store.add_prompt("Q")
    return p, store.add_response(p, "good", "base"), store.add_response(p, "bad", "v1-sft")


def test_formats_are_trl_conversational(store: FeedbackStore) -> None:
    p, good, bad = _pair_world(store)
    store.add_demonstration(p, "demo")
    store.add_comparison(good, bad, "a", "ann")
    store.add_rating(good, "ann", thumbs=1)
    sft, prefs, kto = build_sft_dataset(store), build_preference_dataset(store), build_kto_dataset(store)
    assert sft.column_names == ["messages"] and prefs.column_names == ["prompt", "chosen", "rejected"]
    assert sft[0]["messages"] == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "demo"}]
    assert prefs[0] == {
        "prompt": [{"role": "user", "content": "Q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    assert kto.column_names == ["prompt", "completion", "label"] and kto[0]["label"] is True
    empty = FeedbackStore(Path(store.path).with_name("empty.db"))
    assert len(build_preference_dataset(empty)) == 0 and build_kto_dataset(empty).column_names == kto.column_names


def test_majority_per_pair_and_disagreements_counted(store: FeedbackStore) -> None:
    _, good, bad = _pair_world(store)
    store.add_comparison(good, bad, "a", "ann")
    store.add_comparison(bad, good, "b", "bob")  # same pair, positions swapped, same winner
    store.add_comparison(good, bad, "b", "cy")
    rows, counts = preference_rows(store)
    assert len(rows) == 1 and rows[0]["chosen"][0]["content"] == "good"
    store.add_comparison(good, bad, "b", "dee")  # 2 vs 2: no majority
    rows, counts = preference_rows(store)
    assert rows == [] and counts["disagreements"] == 1
    store.add_comparison(good, bad, "a", "dee")  # a reviewer's latest judgment counts
    assert len(preference_rows(store)[0]) == 1


def test_rankings_expand_to_pairs_and_corrections_become_pairs(store: FeedbackStore) -> None:
    p = store.add_prompt("Q")
    ids = [store.add_response(p, t, v) for t, v in [("one", "a"), ("two", "b"), ("three", "c")]]
    store.add_ranking(ids, "ann")
    store.add_correction(ids[2], "three, fixed", "ann")
    rows, counts = preference_rows(store)
    pairs = {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows}
    assert pairs == {("one", "two"), ("one", "three"), ("two", "three"), ("three, fixed", "three")}
    assert (counts["rankings"], counts["corrections"]) == (3, 1)
    sft = [r["messages"][-1]["content"] for r in sft_rows(store)[0]]
    assert sft == ["three, fixed"]


def test_data_check_messages_are_admin_readable(store: FeedbackStore) -> None:
    p, good, bad = _pair_world(store)
    other = store.add_response(p, "other", "v2")
    store.add_comparison(good, bad, "a", "ann")
    store.add_comparison(good, other, "tie", "ann")
    store.add_comparison(bad, other, "both_bad", "ann")
    check = data_check(store, "dpo")
    assert not check.ok
    assert check.problems == ["DPO needs at least 4 preference pairs; found 1 (2 judged pairs were ties or both bad)"]
    store.add_rating(good, "ann", thumbs=1)
    kto = data_check(store, "kto")
    assert "KTO needs both thumbs-up and thumbs-down; found 1 up, 0 down" in kto.problems
    assert data_check(store, "sft").counts["rated_good"] == 1
    assert "no held-out prompts" in data_check(store, "sft").warnings[-1]


# property tests ---------------------------------------------------------------------------------------------------

USERS = ["ann", "bob", "cy"]
action = st.one_of(
    st.tuples(
        st.just("rate"),
        st.integers(0, 50),
        st.sampled_from(USERS),
        st.sampled_from([0, 1, None]),
        st.sampled_from([1, 2, 3, 4, 5, None]),
    ),
    st.tuples(
        st.just("compare"),
        st.integers(0, 50),
        st.integers(0, 50),
        st.sampled_from(USERS),
        st.sampled_from(["a", "b", "tie", "both_bad"]),
    ),
    st.tuples(st.just("rank"), st.integers(0, 50), st.sampled_from(USERS)),
    st.tuples(st.just("correct"), st.integers(0, 50), st.sampled_from(USERS), st.sampled_from(["fixed", "same", ""])),
)
world = st.fixed_dictionaries(
    {
        "prompts": st.lists(
            st.tuples(
                st.sampled_from(["train", "heldout"]),
                st.lists(st.sampled_from(["x", "y", "z", "  "]), min_size=1, max_size=4),
            ),
            min_size=1,
            max_size=4,
        ),
        "actions": st.lists(action, max_size=25),
        "split_at": st.integers(0, 25),
    }
)


def _apply(store: FeedbackStore, responses: list[tuple[int, int]], act: tuple) -> None:
    pick = lambda i: responses[i % len(responses)]  # noqa: E731
    if act[0] == "rate" and (act[3] is not None or act[4] is not None):
        store.add_rating(pick(act[1])[0], act[2], thumbs=act[3], likert=act[4])
    elif act[0] == "compare":
        (a, pa), (b, pb) = pick(act[1]), pick(act[2])
        if a != b and pa == pb:
            store.add_comparison(a, b, act[4], act[3])
    elif act[0] == "rank":
        prompt = pick(act[1])[1]
        ids = [r for r, p in responses if p == prompt]
        if len(ids) >= 2:
            store.add_ranking(ids[::-1] if act[1] % 2 else ids, act[2])
    elif act[0] == "correct" and act[3]:
        response = store.get_response(pick(act[1])[0])
        text = response.text if act[3] == "same" else act[3]
        if text.strip():
            store.add_correction(response.id, text, act[2])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=world)
def test_builders_properties(tmp_path: Path, spec: dict) -> None:
    store = FeedbackStore(tmp_path / f"prop-{next(_files)}.db")
    responses = []
    for n, (split, texts) in enumerate(spec["prompts"]):
        p = store.add_prompt(f"{split} prompt {n}", split=split)
        responses += [(store.add_response(p, t, f"v{i}"), p) for i, t in enumerate(texts)]
    actions = spec["actions"]
    for act in actions[: spec["split_at"]]:
        _apply(store, responses, act)
    snap = store.snapshot()
    before = {f.__name__: f(store)[0] for f in (sft_rows, preference_rows, kto_rows)}
    for act in actions[spec["split_at"] :]:
        _apply(store, responses, act)

    for split in ("train", "heldout"):
        for build in (sft_rows, preference_rows, kto_rows):
            rows, counts = build(store, split=split)
            prompts = [r.get("prompt") or r["messages"][:-1] for r in rows]
            assert all(p[-1]["content"].startswith(split) for p in prompts)  # held-out never leaks into train
            sources = {"sft_rows": ("demonstrations", "corrections", "rated_good"), "kto_rows": ("up", "down")}
            sources["preference_rows"] = ("imported", "corrections", "comparisons", "rankings", "likert")
            assert len(rows) == sum(counts[s] for s in sources[build.__name__])  # counts add up
            assert len({repr(r) for r in rows}) == len(rows)  # no duplicates
    for row in preference_rows(store)[0]:
        assert row["chosen"][0]["content"].strip() != row["rejected"][0]["content"].strip()
        assert row["chosen"][0]["content"].strip() and row["rejected"][0]["content"].strip()
    for build in (sft_rows, preference_rows, kto_rows):  # a snapshot rebuilds exactly what existed when taken
        assert build(store, snapshot=snap)[0] == before[build.__name__]
    store.close()
