"""webapp.usage_limits: per-user in-flight and rate limits, the history cap and the model-input budget. The same
limits against the live app (parallel chats over HTTP) are in tests/reliability/test_attacks.py."""

import gradio as gr
import pytest

from webapp.usage_limits import MAX_PROMPT_TOKENS, UsageLimits, cap_history, fit_context


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_request_in_flight_per_user_and_lane():
    limits = UsageLimits(max_in_flight=1)
    with limits.slot("vic", "chat"):
        with pytest.raises(gr.Error, match="already have 1 chat"):
            with limits.slot("vic", "chat"):
                pass
        with limits.slot("rita", "chat"), limits.slot("vic", "chat_compare"):
            pass  # other users and the side-by-side lane are not blocked
    with limits.slot("vic", "chat"):  # released after the block, also after an error inside it
        pass


def test_rate_limit_is_a_token_bucket_per_user():
    clock = Clock()
    limits = UsageLimits(burst=3, refill_s=10, clock=clock)
    for _ in range(3):
        with limits.slot("vic", "chat"):
            pass
    with pytest.raises(gr.Error, match="Too many chat requests: try again in 10 s"):
        with limits.slot("vic", "chat"):
            pass
    with limits.slot("rita", "chat"):
        pass
    clock.now = 10
    with limits.slot("vic", "chat"):
        pass


def test_refusal_peeks_without_taking_a_slot_or_a_token():
    clock = Clock()
    limits = UsageLimits(max_in_flight=1, burst=1, refill_s=10, clock=clock)
    assert [limits.refusal("vic", "chat") for _ in range(5)] == [None] * 5  # looking takes nothing
    with limits.slot("vic", "chat"):
        assert "already have 1 chat" in limits.refusal("vic", "chat")
        assert limits.refusal("vic", "arena") is None and limits.refusal("rita", "chat") is None
    assert limits.refusal("vic", "chat") == "Too many chat requests: try again in 10 s."
    clock.now = 10
    assert limits.refusal("vic", "chat") is None
    assert limits.limited("chat_compare", "chat_compare") == "chat_compare"
    assert limits.lanes == {"chat_compare": "chat_compare"}


def count(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)  # one token a character


def test_history_cap_keeps_the_newest_messages():
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": "x" * 100} for i in range(10)]
    assert cap_history(messages, max_chars=350) == messages[-3:]
    assert cap_history([{"role": "user", "content": "y" * 1000}], max_chars=10)[0]["content"] == "y" * 1000


def test_model_input_is_cut_to_the_budget_with_a_notice():
    turns = [{"role": r, "content": f"{i}" * 100} for i, r in enumerate(["user", "assistant"] * 3 + ["user"])]
    fitted, notice = fit_context(turns, count, max_tokens=250)
    assert fitted == turns[-1:] or fitted[0]["role"] == "user"
    assert count(fitted) <= 250 and fitted[-1] == turns[-1] and "oldest message(s)" in notice
    assert fit_context(turns[-1:], count, max_tokens=250) == (turns[-1:], None)
    long = [{"role": "user", "content": "a" * 900 + "END"}]
    fitted, notice = fit_context(long, count, max_tokens=100)
    assert count(fitted) <= 100 and fitted[0]["content"].endswith("END") and "characters of your message" in notice


def test_model_input_budget_counts_the_real_tokenizers_tokens(base_model_path):
    """transformers 5's apply_chat_template returns a dict (input_ids, attention_mask): counting its len() gave 2
    whatever the input, so no chat was ever cut to the budget (an 8,000-char message reached the model as 1,579
    tokens, a server-kept 24,000-char history as ~5,000)."""
    from training.base_model import load_tokenizer
    from training.generation import prompt_ids
    from webapp.chat_answers import chat_input

    tokenizer = load_tokenizer(base_model_path)
    long = [{"role": "user", "content": "Tell me about computing history, in detail. " * 180 + "END"}]
    assert len(prompt_ids(tokenizer, long)) > MAX_PROMPT_TOKENS
    fitted, notice = chat_input(tokenizer, long)
    assert len(prompt_ids(tokenizer, fitted)) <= MAX_PROMPT_TOKENS and fitted[0]["content"].endswith("END")
    assert "characters of your message" in notice
    turns = [{"role": r, "content": f"turn {i} " * 300} for i, r in enumerate(["user", "assistant"] * 4 + ["user"])]
    fitted, notice = chat_input(tokenizer, turns)
    assert len(prompt_ids(tokenizer, fitted)) <= MAX_PROMPT_TOKENS and fitted[-1] == turns[-1]
    assert "oldest message(s)" in notice
