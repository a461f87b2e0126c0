"""Command line for the store: users, imports, exports and data checks without the web app.

python -m feedback_db create-user --db data/tuneloop.db admin admin      # asks for the password
python -m feedback_db import --db data/tuneloop.db prefs.jsonl preferences [--split heldout]
python -m feedback_db export --db data/tuneloop.db preferences out/prefs.parquet   # or a table: ratings
python -m feedback_db check --db data/tuneloop.db dpo
"""

from __future__ import annotations

import argparse
import getpass
import sys

from feedback_db import FeedbackStore
from feedback_db.splits import DEFAULT_HELDOUT_SHARE
from feedback_db.vocab import IMPORT_KINDS, ROLES, SPLITS, STAGES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feedback_db")
    parser.add_argument("--db", default="data/tuneloop.db", help="path of the SQLite store")
    parser.add_argument("--heldout-share", type=float, default=DEFAULT_HELDOUT_SHARE,
                        help="share of new prompts held out (by a hash of the text) when no split is given")
    commands = parser.add_subparsers(dest="command", required=True)
    user = commands.add_parser("create-user", help="add a user (password read from the terminal)")
    user.add_argument("username")
    user.add_argument("role", choices=ROLES)
    imp = commands.add_parser("import", help="import a JSONL/CSV/Parquet file, all or nothing")
    imp.add_argument("path")
    imp.add_argument("kind", choices=IMPORT_KINDS)
    imp.add_argument("--split", choices=SPLITS, default=None,
                     help="split of new prompts without a 'split' field (default: --heldout-share of them held out)")
    exp = commands.add_parser("export", help="export a dataset (sft|preferences|kto) or a raw table")
    exp.add_argument("name", help="sft | preferences (old spelling: preference) | kto, or a table name")
    exp.add_argument("path", help="ends in .jsonl or .parquet")
    exp.add_argument("--split", choices=SPLITS, default="train")
    check = commands.add_parser("check", help="is there enough data for a training method?")
    check.add_argument("method", choices=STAGES)
    args = parser.parse_args(argv)

    store = FeedbackStore(args.db, heldout_share=args.heldout_share)
    if args.command == "create-user":
        print(store.create_user(args.username, getpass.getpass("password: "), args.role))
    elif args.command == "import":
        from feedback_db.importers import ImportValidationError, import_file

        try:
            print(import_file(store, args.path, args.kind, split=args.split))
        except ImportValidationError as exc:
            print(f"{args.path}: {exc}; nothing was imported", file=sys.stderr)
            return 1
    elif args.command == "export":
        from feedback_db.exporters import export

        rows = export(store, args.name, args.path, split=args.split)
        print(f"wrote {rows} rows to {args.path}")
    else:
        from feedback_db.datasets import data_check

        result = data_check(store, args.method)
        print("ok" if result.ok else "not ready", result.counts)
        for line in result.problems + result.warnings:
            print(" -", line)
        return 0 if result.ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
