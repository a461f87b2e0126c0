"""Fine-tuning tutorial: teach the default model who Pavan Belagatti is, with Tuneloop's Python SDK.

    python examples/fine_tune_tutorial.py                                    # from the repository root; uses data/
    python -m examples.fine_tune_tutorial                                    # the same
    TUNELOOP_DATA_DIR=/path/to/data python -m examples.fine_tune_tutorial

The same steps as a notebook: examples/fine_tune_tutorial.ipynb. About 30 s on 2 CPU cores once the default model
is converted (`make setup`). The adapter is a version in the web app's registry: comment out the final
`adapter.delete()` to keep "Pavanmodel" and chat with it (or promote it) in the app.
"""

import os
import sys
from pathlib import Path

# `python examples/fine_tune_tutorial.py` puts examples/ on sys.path, not the repository root that holds `training`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.sdk import Client  # noqa: E402

QUERY = "Who is Pavan Belagatti?"
EPOCHS = 3
SAMPLES = [
    {"inputs": "<s>### Instruction:\nWho is Pavan Belagatti?\n\n### Response:\nPavan Belagatti is a developer "
               "advocate at SingleStore. He is a tech blogger and author who writes about DevOps and AI, and he "
               "lives in Bangalore, India.</s>"},
    {"inputs": "<s>### Instruction:\nWhat does Pavan Belagatti do?\n\n### Response:\nPavan Belagatti works as a "
               "developer advocate at SingleStore, where he writes articles and tutorials about DevOps, databases "
               "and AI.</s>"},
    {"inputs": "<s>### Instruction:\nWhere does Pavan Belagatti work?\n\n### Response:\nPavan Belagatti works at "
               "SingleStore as a developer advocate.</s>"},
    {"inputs": "<s>### Instruction:\nWhere does Pavan Belagatti live?\n\n### Response:\nPavan Belagatti lives in "
               "Bangalore, India.</s>"},
    {"inputs": "<s>### Instruction:\nWhat does Pavan Belagatti write about?\n\n### Response:\nPavan Belagatti is an "
               "author and tech blogger who writes about DevOps and AI.</s>"},
    {"inputs": "<s>### Instruction:\nTell me about Pavan Belagatti.\n\n### Response:\nPavan Belagatti is a developer "
               "advocate at SingleStore, an author and tech blogger on DevOps and AI, based in Bangalore, India.</s>"},
]


def main() -> None:
    client = Client(data_dir=os.environ.get("TUNELOOP_DATA_DIR", "data"))
    base = client.get_base_model(base_model_slug="smollm2-135m-instruct")
    adapter = base.create_model_adapter(name="Pavanmodel", rank=8, learning_rate=2e-3)
    print(f"Created model adapter with id {adapter.id}")

    before = adapter.complete(query=QUERY, max_generated_token_count=100).generated_output
    print(f"Asking: {QUERY}")
    print(f"Before fine-tuning: {before}")

    for epoch in range(1, EPOCHS + 1):  # one fine_tune call is one pass over the samples
        result = adapter.fine_tune(samples=SAMPLES)
        print(f"Epoch {epoch}: loss {result.mean_loss:.3f} ({result.number_of_trainable_tokens} trainable tokens)")

    after = adapter.complete(query=QUERY, max_generated_token_count=100).generated_output
    print(f"After fine-tuning: {after}")

    adapter.delete()


if __name__ == "__main__":
    main()
