"""Benchmark 8: does the loop make the model better? Simulated reviewers with a known rule (AlpacaFarm-style).

    python -m bench.loop_quality --quick               # 1 round + a flipped round + an unchanged model, small sizes
    python -m bench.loop_quality                       # 2 rounds per oracle, flipped rounds over --flip_seeds seeds
    python -m bench.loop_quality --oracle plain --rounds 2 --seeds 0,1
    python -m bench.loop_quality --oracle short --kinds flipped --flip_seeds 10 --resume   # add seeds later

Each finished scenario's rows are appended to `--results` (default bench/loop_quality_rows.jsonl, kept in git) with
the settings they ran under; `--resume` skips scenarios already there with the same settings and reports all of
them, so the long full run (hours on 2 CPU cores) can be spread over several sessions.

Runs the real loop end to end on a fresh data dir with the real app (`python app.py`) serving REST and hot-swaps:
1. prompts are added without a split, so `--heldout-share` of them are held out by text hash (the default path);
2. on-policy A/B candidates: the active version samples two answers per train prompt (the admin's "generate");
3. two simulated reviewers vote on every pair through `POST /api/v1/comparisons` and thumbs the answer they preferred
   through `POST /api/v1/ratings`, each flipping 15 % of their votes at random;
4. a round `sft,reward,dpo` (`python -m training round`, what the app's runner starts);
5. the gate in human sign-off mode: its held-out A/B items are voted by the same noisy oracle reviewers over REST;
   the app decides once every item has two votes and hot-swaps a pass;
6. the oracle (noise-free) judges greedy answers of the active version vs the base on every held-out prompt:
   win-rate among decisive judgments with its 95 % Wilson interval.
Oracles: `short` prefers the answer with fewer words; `plain` prefers plain prose: fewer markdown marks (list
bullets, numbered lines, headings, bold), then fewer line breaks (one paragraph). A *flipped* round trains on
inverted votes while the gate is still voted by the true oracle: it must never be promoted. An *unchanged* model (a
zero LoRA: same answers as the base) must never be promoted either. Wall time of each phase is reported.
"""

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from bench.common import ROOT, base_model_path, markdown_table, offline, report
from bench.write_load import free_port, start_app, stop_app
from feedback_db.store import FeedbackStore
from training.base_model import DEFAULT_BASE_MODEL, load_causal_lm, load_tokenizer
from training.evaluate import greedy_answers
from training.gate import wilson_interval
from training.generation import Request, generate
from training.versions import load_version_model

PASSWORD = "bench-password-1"
REVIEWERS = ("oracle1", "oracle2")
TOPICS = ["sleep", "coffee", "running", "saving money", "learning a language", "gardening", "cooking rice",
          "public speaking", "job interviews", "writing emails", "time management", "stretching", "camping",
          "reading more", "drinking water", "houseplants", "budget travel", "meal prep", "bike repair", "chess",
          "photography", "baking bread", "meditation", "moving house", "painting a room", "first aid", "recycling",
          "studying for exams", "making friends", "learning guitar", "keeping a journal", "birdwatching", "composting",
          "hiking safety", "cleaning a kitchen", "buying a laptop", "walking a dog", "hosting a dinner",
          "choosing running shoes", "winter driving"]
TEMPLATES = ["Give me some tips about {t}.", "Explain {t} to a beginner.", "What should I know about {t}?",
             "How do I get better at {t}?", "What are common mistakes with {t}?", "Tell me about {t}.",
             "How do I start with {t}?", "Why does {t} matter?"]
MARKDOWN = re.compile(r"^\s*([-*+]|\d+[.)]|#+)\s|\*\*", re.MULTILINE)


# ----- oracles ------------------------------------------------------------------------------------------------
# Each oracle's rule, as stored with its rows: a changed rule never mixes with rows of the old one.
ORACLE_RULES = {
    "short": "fewer words",
    # Markdown marks alone were at stake on too few prompts: the base answered 49 of 64 gate prompts without any, so
    # a perfect candidate could reach at most 15 decisive comparisons, below the gate's 20 (BENCHMARKS, 12:14 UTC).
    "plain": "fewer markdown marks, then fewer line breaks",
}


def oracle_score(oracle: str, answer: str) -> tuple:
    """Higher is better: fewer words (`short`); fewer markdown marks, then fewer line breaks — one plain paragraph
    (`plain`). An empty answer is worst."""
    if not answer.strip():
        return (-1e9,)
    if oracle == "short":
        return (-len(answer.split()),)
    return (-len(MARKDOWN.findall(answer)), -answer.strip().count("\n"))


def oracle_judgment(oracle: str, a: str, b: str) -> str:
    """`a`, `b` or `tie`, noise-free."""
    sa, sb = oracle_score(oracle, a), oracle_score(oracle, b)
    return "a" if sa > sb else "b" if sb > sa else "tie"


def noisy(judgment: str, rng: random.Random, noise: float) -> str:
    return {"a": "b", "b": "a"}.get(judgment, judgment) if rng.random() < noise else judgment


# ----- the app side -------------------------------------------------------------------------------------------
@dataclass
class Loop:
    folder: Path
    store: FeedbackStore
    tokens: dict[str, str]
    url: str
    app: subprocess.Popen


def setup(folder: Path, heldout_share: float) -> tuple[FeedbackStore, dict[str, str]]:
    (folder / "models").mkdir(parents=True)
    (folder / "models" / DEFAULT_BASE_MODEL).symlink_to(Path(base_model_path()).resolve(), target_is_directory=True)
    store = FeedbackStore(folder / "tuneloop.db", heldout_share=heldout_share)
    store.create_user("admin", PASSWORD, "admin")
    tokens = {}
    for name in REVIEWERS:
        store.create_user(name, PASSWORD, "reviewer")
        tokens[name] = store.create_api_token(name, "bench")
    for topic in TOPICS:
        for template in TEMPLATES:
            store.add_prompt(template.format(t=topic), source="bench")  # no split: held out by hash
    return store, tokens


def post(loop: Loop, reviewer: str, path: str, body: dict) -> None:
    response = httpx.post(f"{loop.url}/api/v1/{path}", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {loop.tokens[reviewer]}"})
    if response.status_code != 201:
        raise RuntimeError(f"POST {path} {body}: HTTP {response.status_code} {response.text[:200]}")


def vote(loop: Loop, pairs: list[tuple[int, int]], oracle: str, rng: random.Random, noise: float,
         flipped: bool = False, thumbs: bool = False) -> None:
    """Every reviewer votes on every pair (and thumbs the answer it preferred when `thumbs`)."""
    for a, b in pairs:
        truth = oracle_judgment(oracle, loop.store.get_response(a).text, loop.store.get_response(b).text)
        if flipped:
            truth = {"a": "b", "b": "a"}.get(truth, truth)
        for reviewer in REVIEWERS:
            winner = noisy(truth, rng, noise)
            post(loop, reviewer, "comparisons", {"response_a": a, "response_b": b, "winner": winner})
            if thumbs and winner in ("a", "b"):
                post(loop, reviewer, "ratings", {"response_id": a if winner == "a" else b, "thumbs": 1})
                post(loop, reviewer, "ratings", {"response_id": b if winner == "a" else a, "thumbs": 0})


@torch.no_grad()
def generate_pairs(loop: Loop, base_model: str, tokenizer, max_new_tokens: int, seed: int,
                   count: int) -> list[tuple[int, int]]:
    """Two sampled answers (temperature 1, top-p 0.95, seeded) of the active version to `count` random train
    prompts, decoded together by the app's batched generator and stored as responses (on-policy A/B)."""
    active = loop.store.active_version()
    model = load_version_model(base_model, active.path if active else None).eval()
    name = active.name if active else "base"
    prompts = random.Random(seed).sample(loop.store.list_prompts(split="train"), count)
    requests = [Request(prompt.as_messages(), max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95,
                        seed=seed * 10_000 + 2 * i + j) for i, prompt in enumerate(prompts) for j in range(2)]
    texts = [result.text.strip() for result in generate(model, tokenizer, requests)]
    settings = {"max_new_tokens": max_new_tokens, "temperature": 1.0, "top_p": 0.95, "bench": "loop_quality"}
    return [tuple(loop.store.add_response(prompt.id, t, name, settings) for t in texts[2 * i:2 * i + 2])
            for i, prompt in enumerate(prompts) if texts[2 * i] != texts[2 * i + 1]]


def run_round(loop: Loop, args: argparse.Namespace, tag: str) -> str:
    gate = {"judge": "human", "votes_per_item": len(REVIEWERS), "gate_prompts": args.gate_prompts,
            "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    stage_args = {"evaluate": gate}
    command = [sys.executable, "-m", "training", "round", "--db", loop.store.path, "--stages", "sft,reward,dpo",
               "--max_steps", str(args.max_steps), "--stage_args", json.dumps(stage_args), "--parent", "active"]
    log = loop.folder / f"round-{tag}.log"
    with log.open("wb") as out:
        status = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    if status:
        raise RuntimeError(f"round {tag} failed:\n{log.read_text()[-3000:]}")
    return loop.store.list_runs()[0].versions[-1]


def vote_gate(loop: Loop, version: str, oracle: str, rng: random.Random, noise: float, timeout_s: float) -> dict:
    """The oracle reviewers vote on the gate's items; then wait for the app to decide. Returns the final gate."""
    gate = loop.store.get_version(version).metrics["gate"]
    pairs = [tuple(p) for p in gate["pairs"] if p]
    vote(loop, pairs, oracle, rng, noise)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        gate = loop.store.get_version(version).metrics["gate"]
        active = loop.store.active_version()
        # a pass is decided before the app has hot-swapped the version in: wait for the promotion too
        swapped_in = active is not None and active.name == version
        if gate["status"] != "waiting" and (not gate.get("verdict", {}).get("promote") or swapped_in):
            return gate
        time.sleep(0.5)
    raise RuntimeError(f"the app did not decide the gate of {version} within {timeout_s} s")


_BASE_ANSWERS: dict[str, list] = {}


@torch.no_grad()
def base_answers(base_model: str, tokenizer, messages: list[list[dict]], max_new_tokens: int) -> list:
    """The base model's greedy answers, decoded once per process: every scenario holds out the same prompts (by
    text hash), so the second and later scenarios reuse them (same batch, same answers)."""
    key = json.dumps([base_model, max_new_tokens, messages])
    if key not in _BASE_ANSWERS:
        _BASE_ANSWERS[key] = greedy_answers(load_causal_lm(base_model).eval(), tokenizer, messages, max_new_tokens)
    return _BASE_ANSWERS[key]


@torch.no_grad()
def oracle_win_rate(loop: Loop, base_model: str, tokenizer, oracle: str, max_new_tokens: int,
                    version: str | None = None) -> list:
    """`version` (default: the active one) vs base on every held-out prompt, judged by the noise-free oracle:
    [rate, low, high, W, L, T]; rate None when no version differs from the base."""
    chosen = loop.store.get_version(version) if version else loop.store.active_version()
    if chosen is None:
        return [None, None, None, 0, 0, 0]
    policy = load_version_model(base_model, chosen.path).eval()
    tally = {"a": 0, "b": 0, "tie": 0}
    messages = [p.as_messages() for p in loop.store.list_prompts(split="heldout")]
    for (new, _), (old, _) in zip(greedy_answers(policy, tokenizer, messages, max_new_tokens),
                                  base_answers(base_model, tokenizer, messages, max_new_tokens), strict=True):
        tally[oracle_judgment(oracle, new, old) if new != old else "tie"] += 1
    decisive = tally["a"] + tally["b"]
    low, high = wilson_interval(tally["a"], decisive)
    return [tally["a"] / decisive if decisive else None, low, high, tally["a"], tally["b"], tally["tie"]]


def zero_lora_version(loop: Loop, base_model: str) -> str:
    """A LoRA adapter whose B matrices are zero: exactly the base model's answers, registered as a candidate."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(load_causal_lm(base_model), lora)
    path = loop.folder / "versions" / "v99-unchanged"
    model.save_pretrained(str(path))
    loop.store.register_version("v99-unchanged", None, "dpo", "lora", str(path), base_model, {}, loop.store.snapshot(),
                                {})
    return "v99-unchanged"


# ----- scenarios ----------------------------------------------------------------------------------------------
def scenario(args: argparse.Namespace, oracle: str, seed: int, kind: str, rounds: int) -> list[list]:
    """`kind`: loop (real rounds), flipped (one round on inverted votes), unchanged (a zero LoRA). Rows per round."""
    folder = Path(tempfile.mkdtemp(prefix=f"loop-{oracle}-{kind}-{seed}-"))
    store, tokens = setup(folder, args.heldout_share)
    port = free_port()
    app = start_app_with_share(folder, port, args.heldout_share)
    loop = Loop(folder, store, tokens, f"http://127.0.0.1:{port}", app)
    rng = random.Random(seed)
    base_model = base_model_path()
    tokenizer = load_tokenizer(base_model)
    rows = []
    try:
        if kind == "unchanged":
            started = time.perf_counter()
            name = zero_lora_version(loop, base_model)
            gate_cmd = [sys.executable, "-m", "training", "evaluate", "--db", store.path, "--version", name,
                        "--judge", "human", "--votes_per_item", "2", "--gate_prompts", str(args.gate_prompts),
                        "--max_new_tokens", str(args.max_new_tokens)]
            subprocess.run(gate_cmd, cwd=ROOT, check=True, capture_output=True)
            gate = vote_gate(loop, name, oracle, rng, args.noise, 1800)
            same = [None, None, None, 0, 0, 0]  # its answers are the base's: no oracle comparison to make
            rows.append(row(oracle, seed, kind, 0, gate, store, same, same, {"gate": time.perf_counter() - started}))
            return rows
        for number in range(1, rounds + 1):
            times = {}
            started = time.perf_counter()
            pairs = generate_pairs(loop, base_model, tokenizer, args.max_new_tokens, seed * 100 + number,
                                   args.train_prompts)
            times["generate"] = time.perf_counter() - started
            started = time.perf_counter()
            vote(loop, pairs, oracle, rng, args.noise, flipped=kind == "flipped", thumbs=True)
            times["vote"] = time.perf_counter() - started
            started = time.perf_counter()
            name = run_round(loop, args, f"{number}")
            times["round+gate answers"] = time.perf_counter() - started
            started = time.perf_counter()
            gate = vote_gate(loop, name, oracle, rng, args.noise, 1800)
            times["gate votes+decision"] = time.perf_counter() - started
            started = time.perf_counter()
            quality = oracle_win_rate(loop, base_model, tokenizer, oracle, args.max_new_tokens)
            active = store.active_version()
            candidate = quality if active and active.name == name else oracle_win_rate(
                loop, base_model, tokenizer, oracle, args.max_new_tokens, name)
            times["oracle eval"] = time.perf_counter() - started
            rows.append(row(oracle, seed, kind, number, gate, store, quality, candidate, times))
            print(markdown_table(HEADERS, rows[-1:]), flush=True)
    finally:
        stop_app(app)
        store.close()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


ROWS = Path(__file__).with_name("loop_quality_rows.jsonl")


def settings_key(args: argparse.Namespace, oracle: str) -> dict:
    """What a scenario's figures depend on; rows are only combined across runs with equal keys."""
    names = ("quick", "rounds", "noise", "heldout_share", "gate_prompts", "train_prompts", "max_new_tokens",
             "max_steps", "seed")
    return {**{n: getattr(args, n) for n in names}, "prompts": len(TOPICS) * len(TEMPLATES),
            "oracle_rule": ORACLE_RULES[oracle]}


def previous_rows(path: Path, args: argparse.Namespace) -> dict:
    """(oracle, seed, kind) -> rows of earlier runs with these settings (the latest run of each wins)."""
    found = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["oracle"] in ORACLE_RULES and entry["settings"] == settings_key(args, entry["oracle"]):
                found[(entry["oracle"], entry["seed"], entry["kind"])] = entry["rows"]
    return found


def start_app_with_share(folder: Path, port: int, share: float) -> subprocess.Popen:
    """The real app on this data dir (bench.write_load.start_app), with the bench's held-out share."""
    return start_app(folder, port, folder / "app.log", extra=["--heldout-share", str(share)])


HEADERS = ["oracle", "seed", "run", "round", "gate verdict", "W/L/T (gate)", "gate lower bound", "promoted",
           "active", "oracle win-rate active vs base [95 %] W/L/T", "oracle win-rate candidate vs base [95 %] W/L/T",
           "phase seconds"]


def quality_cell(quality: list) -> str:
    rate, low, high, wins, losses, ties = quality
    if rate is None:
        return f"- ({wins}/{losses}/{ties})" if wins + losses + ties else "- (base)"
    return f"{rate:.2f} [{low:.2f}, {high:.2f}] {wins}/{losses}/{ties}"


def row(oracle: str, seed: int, kind: str, number: int, gate: dict, store: FeedbackStore, quality: list,
        candidate: list, times: dict) -> list:
    verdict = gate.get("verdict", {})
    active = store.active_version()
    return [oracle, seed, kind, number, gate["status"],
            f"{verdict.get('wins', 0)}/{verdict.get('losses', 0)}/{verdict.get('ties', 0)}",
            verdict.get("lower"), bool(verdict.get("promote")), active.name if active else "base",
            quality_cell(quality), quality_cell(candidate), ", ".join(f"{k} {v:.0f}" for k, v in times.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="One oracle, one round, one flipped seed, short answers.")
    parser.add_argument("--oracle", default="short,plain", help="Comma-separated oracles: short, plain.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seeds", default="0", help="Seeds of the improving loop.")
    parser.add_argument("--flip_seeds", type=int, default=10, help="Seeds of the flipped-preferences round.")
    parser.add_argument("--noise", type=float, default=0.15, help="Share of each reviewer's votes flipped.")
    parser.add_argument("--heldout_share", type=float, default=0.2)
    parser.add_argument("--gate_prompts", type=int, default=64,
                        help="Held-out A/B items the gate asks for (the app's default is 32; 64 gives the "
                             "Wilson bound the power to pass a true ~0.7 winner through 2 noisy reviewers).")
    parser.add_argument("--train_prompts", type=int, default=96, help="Train prompts answered (A/B) per round.")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--max_steps", type=int, default=30, help="Steps per stage.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the gate's prompt sample.")
    parser.add_argument("--keep", action="store_true", help="Keep the data dirs (printed).")
    parser.add_argument("--kinds", default="loop,flipped,unchanged", help="Scenarios to run.")
    parser.add_argument("--results", default=str(ROWS), help="JSON lines: every finished scenario's rows.")
    parser.add_argument("--resume", action="store_true",
                        help="Skip scenarios already in --results with the same settings; report all of them.")
    args = parser.parse_args()
    if args.quick:
        args.oracle, args.rounds, args.flip_seeds, args.max_new_tokens, args.max_steps = "short", 1, 1, 32, 12
        args.train_prompts, args.gate_prompts = 40, 32
    offline()
    kinds = args.kinds.split(",")
    done = previous_rows(Path(args.results), args) if args.resume else {}
    rows = []
    for oracle in args.oracle.split(","):
        plan = [(s, "loop", args.rounds) for s in (int(s) for s in args.seeds.split(",")) if "loop" in kinds]
        plan += [(100 + s, "flipped", 1) for s in range(args.flip_seeds) if "flipped" in kinds]
        plan += [(0, "unchanged", 0)] if "unchanged" in kinds else []
        for seed, kind, rounds in plan:
            if (oracle, seed, kind) in done:
                rows += done.pop((oracle, seed, kind))
                continue
            found = scenario(args, oracle, seed, kind, rounds)
            rows += found
            if not args.quick:
                with open(args.results, "a") as out:
                    out.write(json.dumps({"settings": settings_key(args, oracle), "oracle": oracle, "seed": seed,
                                          "kind": kind, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                          "rows": found}) + "\n")
    for extra in done.values():  # scenarios of earlier sessions outside this run's plan
        rows += extra
    improving = [r for r in rows if r[2] == "loop" and r[3] == args.rounds]
    flipped = [r for r in rows if r[2] == "flipped"]
    unchanged = [r for r in rows if r[2] == "unchanged"]
    notes = [
        f"oracle win-rate vs base after {args.rounds} round(s) (target >= 0.70): "
        + "; ".join(f"{r[0]} seed {r[1]}: active {r[8]} {r[9]}, last trained candidate {r[10]}"
                    for r in improving),
        f"flipped-preference rounds promoted: {sum(r[7] for r in flipped)} of {len(flipped)} (target 0)",
        f"unchanged model promoted: {sum(r[7] for r in unchanged)} of {len(unchanged)} (target 0)",
        "Oracles: " + "; ".join(f"{o}: {ORACLE_RULES[o]}" for o in ORACLE_RULES) + ".",
        "Reviewers: 2 per item, each flipping 15 % of votes; the gate needs the Wilson 95 % lower bound > 0.5 over "
        ">= 20 decisive items (a split vote is a tie).",
    ]
    settings = (f"{'--quick, ' if args.quick else ''}oracles {args.oracle}, {args.rounds} round(s), "
                f"{len(TOPICS) * len(TEMPLATES)} prompts ({args.heldout_share:.0%} held out by hash), "
                f"gate {args.gate_prompts} prompts, answers <= {args.max_new_tokens} tokens, "
                f"{args.max_steps} steps per stage, noise {args.noise}")
    report("Loop quality (simulated reviewers)", settings, HEADERS, rows, notes)


if __name__ == "__main__":
    main()
