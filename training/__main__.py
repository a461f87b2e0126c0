"""Command line: one sub-command per recipe, plus `round` (chained stages) and `evaluate` (the promotion gate).

    python -m training sft --db data/tuneloop.db --technique lora
    python -m training reward --db data/tuneloop.db
    python -m training dpo --db data/tuneloop.db --parent v3-sft
    python -m training kto --db data/tuneloop.db
    python -m training online_rl --db data/tuneloop.db --reward_model v4-reward
    python -m training round --db data/tuneloop.db --stages sft,reward,dpo
    python -m training evaluate --db data/tuneloop.db --version v5-dpo
    python -m training export --db data/tuneloop.db --version v5-dpo --out exports/v5-dpo [--merged]
    python -m training sft --config training/configs/sft_lora.yaml       # any flag can come from a YAML file
    accelerate launch --config_file training/accelerate/ddp.yaml -m training sft --db ...   # multi-GPU

`python -m training <command> --help` lists every flag of that command.
"""

import importlib
import sys

from trl import TrlParser

from training.round import RECIPES

COMMANDS = {
    **RECIPES,
    "round": ("training.round", "RoundConfig"),
    "evaluate": ("training.evaluate", "EvaluateConfig"),
    "export": ("training.export", "ExportConfig"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(f"usage: python -m training {{{','.join(COMMANDS)}}} [flags]")
    module_name, config_name = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = TrlParser(getattr(module, config_name), prog=f"python -m training {argv[0]}")
    (cfg,) = parser.parse_args_and_config(args=argv[1:])
    result = module.main(cfg)
    if result is not None:
        print(result)


if __name__ == "__main__":
    main()
