"""Judges that are language models: a rubric prompt per answer, the reply read by the rubric.

`RubricJudge` owns the rubric, the reading and the retries; where the reply comes from is a
`Chat`, one of:
- `HTTPChat`: an OpenAI-compatible endpoint (a vLLM server, a hosted model), `concurrency`
  requests in flight;
- `EngineChat`: an engine's `answer` (VLLMGenerator or HFGenerator): the judge's own vLLM engine
  (`llm.backend: vllm`), or the generators' engines answering as the policy (`self`).
A reply that fails, times out, does not fit the context or cannot be read is retried
`max_retries` times, sampled at `retry_temperature` (a greedy retry would repeat itself); after
that the answer is `Unjudged`, with the reason and the last raw text, never a guessed label.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple, Protocol

from raylign.actors.generator import PROMPT_TOO_LONG
from raylign.config import LLMJudgeConfig, SamplingConfig
from raylign.data.schemas import user_turn
from raylign.judging.rubrics import Rubric
from raylign.evaluation.scoring import UNJUDGED
from raylign.judging.verdicts import Verdict


class Reply(NamedTuple):
    text: str | None  # None: no reply (the request failed; `error` says why)
    error: str
    latency_s: float


class Chat(Protocol):
    """Replies to messages: each a user message, or a chat (a guard rubric's two turns)."""

    def __call__(self, messages: list[str | list[dict]], temperature: float, seed: int, policy) -> list[Reply]: ...


class RubricJudge:
    def __init__(self, rubric: Rubric, chat: Chat, model: str, max_retries: int, retry_temperature: float):
        self.rubric, self.chat = rubric, chat
        self.max_retries, self.retry_temperature = max_retries, retry_temperature
        self.version = f"{model}@{rubric.version}"

    @property
    def labels(self) -> bool:
        """A CARES or guard rubric labels; a criteria rubric only scores."""
        return not self.rubric.criteria

    def label_all(self, rows: list[dict], policy=None) -> list[Verdict]:
        messages = [self.rubric.fill(r["prompt"], r["answer"]) for r in rows]
        verdicts: list[Verdict | None] = [None] * len(rows)
        why = [""] * len(rows)
        latency = [0.0] * len(rows)
        todo = list(range(len(rows)))
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(2.0, 0.1 * 2**attempt))  # back off from a failing endpoint
            temperature = 0.0 if attempt == 0 else self.retry_temperature
            replies = self.chat([messages[i] for i in todo], temperature, attempt, policy)
            left = []
            for i, reply in zip(todo, replies, strict=True):
                latency[i] += reply.latency_s
                reading = None if reply.text is None else self.rubric.read(reply.text)
                if reading is None:
                    why[i] = f"request failed: {reply.error}" if reply.text is None else f"unreadable verdict: {reply.text}"
                    left.append(i)
                else:
                    verdicts[i] = Verdict(reading.label, reply.text, reading.scores, latency[i])
            todo = left
            if not todo:
                break
        for i in todo:
            verdicts[i] = Verdict(UNJUDGED, why[i], {}, latency[i])
        return verdicts


class HTTPChat:
    """Chat completions from an OpenAI-compatible endpoint; each reply times its own request."""

    def __init__(self, cfg: LLMJudgeConfig):
        from openai import OpenAI

        self.cfg = cfg
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        # Retries are RubricJudge's (they also cover unreadable verdicts), so the client makes none.
        self.client = OpenAI(base_url=cfg.endpoint, api_key=key or "unused", timeout=cfg.timeout_s, max_retries=0)
        self.requests = ThreadPoolExecutor(cfg.concurrency)

    def __call__(self, messages: list[str | list[dict]], temperature: float, seed: int, policy=None) -> list[Reply]:
        return list(self.requests.map(lambda m: self._ask(m, temperature), messages))

    def _ask(self, message: str | list[dict], temperature: float) -> Reply:
        t0 = time.perf_counter()
        try:
            reply = self.client.chat.completions.create(
                model=self.cfg.model, messages=message if isinstance(message, list) else user_turn(message),
                max_tokens=self.cfg.max_tokens, temperature=temperature,
            )
            return Reply(reply.choices[0].message.content or "", "", time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - any failure of the call is retried, then recorded
            return Reply(None, f"{type(e).__name__}: {e}", time.perf_counter() - t0)


class EngineChat:
    """Replies from an engine's `answer(messages, policy, sampling, seed)`, in one batch; every
    reply of the batch took the batch's time."""

    def __init__(self, answer: Callable, max_tokens: int):
        self.answer, self.max_tokens = answer, max_tokens

    def __call__(self, messages: list[str | list[dict]], temperature: float, seed: int, policy) -> list[Reply]:
        sampling = SamplingConfig(samples_per_prompt=1, temperature=temperature, max_new_tokens=self.max_tokens)
        t0 = time.perf_counter()
        try:
            answers = self.answer(messages, policy, sampling, seed)
        except Exception as e:  # noqa: BLE001 - an engine that died or raised: retried, then recorded
            return [Reply(None, f"{type(e).__name__}: {e}", time.perf_counter() - t0)] * len(messages)
        took = time.perf_counter() - t0
        return [
            Reply(None, "the rubric prompt does not fit the model's context", took)
            if c.finish_reason == PROMPT_TOO_LONG else Reply(c.text, "", took)
            for (c,) in answers
        ]


def llm_chat(c: LLMJudgeConfig) -> "HTTPChat | EngineChat":
    """The chat an `llm` config names: its HTTP endpoint, or its model on a vLLM engine here."""
    if c.backend == "http":
        return HTTPChat(c)
    from raylign.actors.vllm_engine import VLLMGenerator
    from raylign.config import GeneratorConfig

    engine = VLLMGenerator(c.model, c.dtype, GeneratorConfig(vllm=c.engine), None, seed=0)
    return EngineChat(engine.answer, c.max_tokens)
