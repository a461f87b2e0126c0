"""Candidate generation: answers of chosen versions to stored prompts, decoded in the model service's shared batch.

Admin › Data queues a job (`GenerationJobs.start`) for one worker thread and returns at once; progress, tokens/s and
ETA go to the store's generation_jobs row, which the tab polls; `cancel` stops a job between two answers (the
answers stored so far stay). The first-run panel calls `generate_candidates` directly; Admin › Versions' Compare
calls `compare`.
"""

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable

from feedback_db.store import FeedbackStore
from webapp.serving.errors import Request
from webapp.serving.protocol import Models

log = logging.getLogger("tuneloop.webapp")
JOB_QUEUE = 4  # generation jobs waiting for the worker; more are refused


# where a sentence or line ends: . ! ? (not the dot of a list number like "2.") before whitespace, or a newline
_SENTENCE_END = re.compile(r"(?<![\s\d])[.!?][)\"'*_]*(?=\s)|\n")


def finished_part(text: str) -> str:
    """`text` up to its last finished sentence or line, when that keeps at least half of it; else `text` as it is
    (one long unfinished sentence is still better shown than cut to nothing)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    if not ends or text.rstrip()[-1:] in ".!?" or ends[-1] < len(text) / 2:
        return text
    return text[: ends[-1]].rstrip()


class GenerationJobs:
    def __init__(self, store: FeedbackStore, models: Models, ensure_loaded: Callable[[str], None]) -> None:
        """`ensure_loaded(name)` loads a stored version into `models` or raises VersionLoadError."""
        self.store, self.models, self._ensure_loaded = store, models, ensure_loaded
        self._queue: queue.Queue = queue.Queue(maxsize=JOB_QUEUE)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    def compare(self, a: str, b: str, prompts: list, max_new_tokens: int = 128,
                progress: Callable[[int, int], None] | None = None) -> list[list[str]]:
        """Greedy answers of versions `a` and `b` to each prompt: [[prompt, answer a, answer b], ...]."""
        self._ensure_loaded(a)
        self._ensure_loaded(b)
        requests = [Request(p.as_messages(), max_new_tokens, adapter=v) for p in prompts for v in (a, b)]
        finished = 0

        def answered(i: int, result) -> None:
            nonlocal finished
            finished += 1
            if progress:
                progress(finished // 2, len(prompts))

        results = self.models.generate_many(requests, on_result=answered)
        return [[p.text, results[2 * i].text, results[2 * i + 1].text] for i, p in enumerate(prompts)]

    def start(self, prompt_ids: list[int], versions: list[str], samples: int, max_new_tokens: int,
                             temperature: float, mode: str, username: str, ab_pair: bool = False) -> int:
        """Queue a candidate-generation job for the worker thread; returns its id at once. Progress, tokens/s and
        ETA go to the store (the Data tab polls them); `cancel` stops it."""
        for name in versions:
            self._ensure_loaded(name)  # a bad version fails here, in the request, not later in the worker
        job_id = self.store.create_generation_job(username, mode, versions, len(prompt_ids) * len(versions) * samples)
        try:
            self._queue.put_nowait((job_id, prompt_ids, versions, samples, max_new_tokens, temperature, ab_pair))
        except queue.Full:
            self.store.update_generation_job(job_id, "failed", error="too many jobs queued")
            raise ValueError(f"{JOB_QUEUE} generation jobs are already queued: wait for one to finish.") from None
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run_jobs, name="tuneloop-generation", daemon=True)
                self._worker.start()
        return job_id

    def cancel(self, job_id: int) -> bool:
        return self.store.cancel_generation_job(job_id)

    def _run_jobs(self) -> None:
        while True:
            job_id, prompt_ids, versions, samples, max_new_tokens, temperature, ab_pair = self._queue.get()
            self._run_job(job_id, prompt_ids, versions, samples, max_new_tokens, temperature, ab_pair)

    def _run_job(self, job_id: int, prompt_ids: list[int], versions: list[str], samples: int, max_new_tokens: int,
                 temperature: float, ab_pair: bool) -> None:
        started, tokens, last = time.monotonic(), 0, {"done": 0}

        def progress(done: int, total: int, new_tokens: int) -> None:
            nonlocal tokens
            tokens += new_tokens
            elapsed = time.monotonic() - started
            last["done"] = done
            self.store.update_generation_job(job_id, "running", done, tokens, tokens / elapsed,
                                             elapsed / done * (total - done))

        def cancelled() -> bool:
            return self.store.get_generation_job(job_id).status == "cancelling"

        try:
            if cancelled():
                self.store.update_generation_job(job_id, "cancelled")
                return
            self.store.update_generation_job(job_id, "running")
            self.generate_candidates(prompt_ids, versions, samples, max_new_tokens, temperature, progress, ab_pair,
                                     cancelled)
            rate = tokens / max(time.monotonic() - started, 1e-9)
            self.store.update_generation_job(job_id, "cancelled" if cancelled() else "done", last["done"], tokens,
                                             rate, 0.0)
        except Exception as err:  # the job fails, the worker goes on with the next one
            log.exception("generation job %s", job_id)
            self.store.update_generation_job(job_id, "failed", last["done"], tokens, error=str(err)[:500])

    def generate_candidates(self, prompt_ids: Iterable[int], versions: list[str], samples: int = 1,
                            max_new_tokens: int = 128, temperature: float = 0.7,
                            progress: Callable[[int, int, int], None] | None = None, ab_pair: bool = False,
                            cancelled: Callable[[], bool] | None = None, whole_sentences: bool = False) -> int:
        """Answer each prompt with each version (`samples` each), decoded in the model service's shared batch; store
        each response as it finishes. Returns how many. `progress(done, total, new tokens of the latest answer)`;
        `cancelled()` true stops it (the answers stored so far stay).
        `ab_pair`: two samples of one version that the review queue serves as a blind A/B item (the first run has
        only the base model, and two sampled answers are still a preference to learn from).
        `whole_sentences`: an answer that ran into `max_new_tokens` is stored up to its last finished sentence or
        line (`settings["cut_at_sentence"]`), so reviewers do not judge a sentence broken off mid-word."""
        prompt_ids = list(prompt_ids)
        for name in versions:
            self._ensure_loaded(name)
        jobs = [(self.store.get_prompt(prompt_id), name, sample)
                for prompt_id in prompt_ids for name in versions for sample in range(samples)]
        requests = [Request(prompt.as_messages(), max_new_tokens, temperature, seed=sample, adapter=name)
                    for prompt, name, sample in jobs]
        done = 0

        def store_answer(i: int, result) -> None:
            nonlocal done
            prompt, name, sample = jobs[i]
            settings = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": sample}
            if ab_pair:
                settings["ab_sample"] = sample
            text = result.text
            if whole_sentences and result.new_tokens >= max_new_tokens and (cut := finished_part(text)) != text:
                text, settings["cut_at_sentence"] = cut, True
            self.store.add_response(prompt.id, text, name, settings)
            done += 1
            if progress:
                progress(done, len(jobs), result.new_tokens)

        self.models.generate_many(requests, on_result=store_answer, cancelled=cancelled)
        return done
