"""Run every benchmark, one fresh process each, and print a summary; each script appends its table to
docs/BENCHMARKS.md.

    python -m bench.run_all            # `make bench`: full settings (about 40 min on 2 CPU cores)
    python -m bench.run_all --quick    # `make bench-quick`: smoke settings (a few minutes)
    python -m bench.run_all --only sft_throughput,chat_serving

A benchmark that fails or overruns its time limit is reported and the others still run; the exit status is 1
if any failed.
"""

import argparse
import os
import subprocess
import sys
import time

from bench.common import ROOT, machine, markdown_table, offline

# (module, time limit in seconds for full / quick settings)
BENCHMARKS = [
    ("sft_throughput", 1500, 420),
    ("dpo_throughput", 1500, 420),
    ("grpo_throughput", 1200, 420),
    ("hot_swap", 600, 240),
    ("chat_serving", 600, 240),
    ("generation", 1200, 420),
    ("job_probe", 1500, 240),
    ("gate_share", 1800, 900),
    ("write_load", 600, 240),
    ("review_click", 300, 120),
    ("tutorial_walltime", 600, 240),
    ("memory", 900, 420),
    ("loop_quality", 14400, 3000),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Smoke settings for every benchmark.")
    parser.add_argument("--only", default="", help="Comma-separated benchmark names to run (default: all).")
    args = parser.parse_args()
    offline()
    chosen = [b for b in BENCHMARKS if not args.only or b[0] in args.only.split(",")]
    print(f"[bench] {machine()}", flush=True)
    summary, failed = [], False
    for name, limit_full, limit_quick in chosen:
        limit = limit_quick if args.quick else limit_full
        command = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        print(f"\n[bench] ===== {name} (limit {limit} s) =====", flush=True)
        started = time.perf_counter()
        try:
            env = {**os.environ, "TQDM_DISABLE": "1"}
            status = subprocess.run(command, cwd=ROOT, timeout=limit, env=env).returncode
            outcome = "ok" if status == 0 else f"failed (exit {status})"
        except subprocess.TimeoutExpired:
            outcome = f"timed out after {limit} s"
        failed |= outcome != "ok"
        summary.append([name, outcome, time.perf_counter() - started])
    print("\n" + markdown_table(["benchmark", "outcome", "seconds"], summary))
    print("\nTables appended to docs/BENCHMARKS.md.")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
