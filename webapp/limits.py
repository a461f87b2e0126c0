"""Server-side limits on what a browser or HTTP client may send: text field sizes and round hyper-parameters.

Gradio checks Slider bounds on the server, but not Textbox lengths nor gr.Number fields without bounds, and every
event is an HTTP endpoint: a 10 MB chat message would be tokenised and run through the model, a LoRA rank of 10^6
would allocate gigabytes in the training process, a learning rate of 1e6 would "train" to NaN. Handlers call these
before doing any work, so the caller gets a clear message and nothing is written or started.

    text = limits.check_text("Correction", text, limits.MAX_REVIEW_TEXT_CHARS)
    limits.check_round_form(max_steps, learning_rate, lora_r, beta, freeze_top_n)
    report_to = limits.check_report_to(report_to)
"""

import importlib.util
import math

import gradio as gr

MAX_CHAT_CHARS = 8_000  # ~2k tokens: the model's useful context on CPU
MAX_HISTORY_CHARS = 24_000  # one message of a stored chat conversation (webapp.usage_limits caps the whole one)
MAX_REVIEW_TEXT_CHARS = 20_000  # corrections and comments (a demonstration longer than this is not one)
MAX_API_BODY_BYTES = 6 * MAX_REVIEW_TEXT_CHARS + 4_096  # the longest comment with every character \uXXXX-escaped
# A model event's request body (webapp/http_guard.py refuses a larger declared Content-Length before reading it). The
# chat's is the largest: the browser sends the message (<= MAX_CHAT_CHARS) with the conversation the Chatbot shows
# (<= 24,000 characters kept by the server, webapp/usage_limits.py, plus one answer of <= 1,024 tokens): ~40k
# characters, at most 6 bytes each JSON-escaped (~240 KB; ~50 KB for plain text); 4x that leaves room for the rest.
MAX_MODEL_BODY_BYTES = 1024 * 1024
MAX_USERNAME_CHARS = 64
MAX_TOKEN_LABEL_CHARS = 200
MAX_PASSWORD_CHARS = 1_024
MAX_STEPS = 100_000
MAX_LORA_RANK = 256
MAX_LEARNING_RATE = 1.0
MAX_BETA = 100.0
MAX_FREEZE_TOP_N = 1_000  # the recipe checks it against the model's real depth


def check_text(label: str, text: str | None, max_chars: int) -> str:
    """Return `text` (None as "") or raise gr.Error naming the field when it is longer than `max_chars`."""
    text = text or ""
    if len(text) > max_chars:
        raise gr.Error(f"{label} is {len(text):,} characters long; the limit is {max_chars:,}.")
    return text


def round_form_problems(max_steps: float | None, learning_rate: float | None, lora_r: float | None,
                        beta: float | None, freeze_top_n: float | None) -> list[str]:
    """What is wrong with the Rounds form's numbers (empty when they are fine). None = the recipe default."""
    problems = []

    def bad(value: float | None) -> bool:
        return value is not None and not math.isfinite(value)

    if any(bad(v) for v in (max_steps, learning_rate, lora_r, beta, freeze_top_n)):
        return ["Every number must be finite (no NaN or infinity)."]
    if max_steps is not None and not (max_steps == -1 or 1 <= max_steps <= MAX_STEPS):
        problems.append(f"Max steps must be -1 (recipe default) or 1..{MAX_STEPS:,}; got {max_steps:g}.")
    if learning_rate is not None and not 0 <= learning_rate <= MAX_LEARNING_RATE:
        problems.append(f"Learning rate must be 0 (recipe default) or a positive value up to {MAX_LEARNING_RATE:g}; "
                        f"got {learning_rate:g}.")
    if lora_r is not None and not 1 <= lora_r <= MAX_LORA_RANK:
        problems.append(f"LoRA rank must be 1..{MAX_LORA_RANK}; got {lora_r:g}.")
    if beta is not None and not 0 < beta <= MAX_BETA:
        problems.append(f"DPO/KTO beta must be in (0, {MAX_BETA:g}]; got {beta:g}.")
    if freeze_top_n is not None and not 1 <= freeze_top_n <= MAX_FREEZE_TOP_N:
        problems.append(f"N (top layers trained) must be at least 1; got {freeze_top_n:g}.")
    return problems


def check_round_form(max_steps: float | None, learning_rate: float | None, lora_r: float | None,
                     beta: float | None, freeze_top_n: float | None) -> None:
    problems = round_form_problems(max_steps, learning_rate, lora_r, beta, freeze_top_n)
    if problems:
        raise gr.Error("Round not started. " + " ".join(problems))


def report_to_choices() -> list[tuple[str, str]]:
    """The Rounds form's experiment-tracking choices (training.run_args.REPORT_TO; MLflow when it is installed)."""
    choices = [("TensorBoard (data/runs/<id>/tb)", "tensorboard"), ("None", "none")]
    if importlib.util.find_spec("mlflow") is not None:
        choices += [("MLflow (data/mlruns)", "mlflow"), ("TensorBoard + MLflow", "tensorboard,mlflow")]
    return choices


def check_report_to(report_to: str | None) -> str:
    """The form's value when it is one of the choices, else gr.Error (an API caller may send anything)."""
    allowed = [value for _, value in report_to_choices()]
    if report_to not in allowed:
        raise gr.Error(f"Round not started. Experiment tracking must be one of {', '.join(allowed)}"
                       f"{'' if 'mlflow' in allowed else ' (MLflow is not installed)'}.")
    return report_to
