"""The SDK's samples, `{"inputs": "<s>### Instruction:\\n...\\n\\n### Response:\\n...</s>"}` or TRL's
`{"messages": [...]}`: checked (errors name the sample), as chat messages, then encoded with the chat template and a
mask of the trained (assistant) tokens. Used by training/sdk.py.
"""

from transformers import PreTrainedTokenizerBase

from feedback_db.vocab import MESSAGE_ROLES

INSTRUCTION, RESPONSE = "### Instruction:", "### Response:"


def parse_sample(index: int, sample: object) -> list[dict]:
    """A sample as chat messages; raises ValueError naming `samples[index]` and what is wrong with it."""
    where = f"samples[{index}]"
    if not isinstance(sample, dict) or len({"inputs", "messages"} & sample.keys()) != 1:
        got = f"keys {sorted(sample)}" if isinstance(sample, dict) else type(sample).__name__
        raise ValueError(f"{where}: expected a dict with exactly one of 'inputs' or 'messages', got {got}.")
    if "inputs" in sample:
        return _parse_inputs(where, sample["inputs"])
    return _check_messages(where, sample["messages"])


def _parse_inputs(where: str, text: object) -> list[dict]:
    if not isinstance(text, str):
        raise ValueError(f"{where}['inputs']: expected a string, got {type(text).__name__}.")
    body = text.strip().removeprefix("<s>").removesuffix("</s>").strip()
    if not body.startswith(INSTRUCTION) or body.count(INSTRUCTION) != 1 or body.count(RESPONSE) != 1:
        raise ValueError(f"{where}['inputs']: expected '<s>{INSTRUCTION}\\n<instruction>\\n\\n{RESPONSE}\\n"
                         f"<response></s>' with one {INSTRUCTION!r} at the start and one {RESPONSE!r} after it.")
    instruction, _, response = body.removeprefix(INSTRUCTION).partition(RESPONSE)
    for part, value in (("instruction", instruction), ("response", response)):
        if not value.strip():
            raise ValueError(f"{where}['inputs']: the {part} is empty.")
    return [{"role": "user", "content": instruction.strip()}, {"role": "assistant", "content": response.strip()}]


def _check_messages(where: str, messages: object) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}['messages']: expected a non-empty list of {{'role', 'content'}} dicts.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES or not isinstance(
                message.get("content"), str):
            raise ValueError(f"{where}['messages'][{i}]: expected {{'role': one of {', '.join(MESSAGE_ROLES)}, "
                             f"'content': str}}, got {message!r}.")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise ValueError(f"{where}['messages']: the last message must be a non-empty assistant turn (it is trained).")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def encode_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """Token ids of the chat-templated conversation and which of them are trained (every assistant turn)."""

    def ids(turns: list[dict], add_generation_prompt: bool = False) -> list[int]:
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=add_generation_prompt)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    input_ids = ids(messages)
    trained = [False] * len(input_ids)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            start, end = len(ids(messages[:i], add_generation_prompt=True)), len(ids(messages[:i + 1]))
            trained[start:end] = [True] * (end - start)
    return input_ids, trained
