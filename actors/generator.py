"""Rollout generators: engines that sample K answers per prompt, and the group that places them.

An engine (`VLLMGenerator` in vllm_engine.py, or `HFGenerator` in hf_engine.py when
`generator.backend: hf` is asked for) is loaded once and kept alive across cycles; each call
names the policy version to answer with, and the engine makes it active without a restart.
`GeneratorGroup` places `generator.engines` engines with a placement group (one bundle per
engine, so an engine's GPUs sit on one node), spreads batches of prompts across them and returns
one ObjectRef per batch, so judging starts on the first finished batch. A vLLM engine generates
up to `generator.batches_in_flight` batches at once.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, NamedTuple

import pyarrow as pa
import ray
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from raylign.actors.placement import place
from raylign.config import GeneratorConfig, SamplingConfig, VLLMConfig
from raylign.data.schemas import ROLLOUTS, PolicyVersion, chat_of
from raylign.training.weights import unpack_folder
from raylign.storage import fetch

PROMPT_TOO_LONG = "prompt_too_long"
"""finish_reason of a prompt that leaves no room to answer in the model's context: it is not
generated, the row is kept (empty answer, so the judges count it Invalid) and the batch goes on."""


class EngineInfo(NamedTuple):
    """What `ready()` tells of an engine; tests check it stays the same across policy swaps."""

    pid: int
    engine: int  # id() of the engine object in that process
    backend: str
    max_model_len: int
    lora_mode: str | None  # how LoRA policies are served (generator.lora_mode; auto resolved), None: none are


class Completion(NamedTuple):
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (EOS), "length" (hit max_new_tokens) or PROMPT_TOO_LONG


NOT_GENERATED = Completion("", 0, PROMPT_TOO_LONG)


def rollout_table(rows: list[dict], completions: list[list[Completion]], cycle: int, stage: str,
                  policy_version: int, staleness: int = 0) -> pa.Table:
    """One ROLLOUTS row per (prompt, sample); `completions[i]` are prompt i's K samples."""
    records = [
        {
            "cycle": cycle,
            "stage": stage,
            "prompt_id": row["id"],
            "sample_index": sample_index,
            "prompt": row["prompt"],
            "harmful_level": row["harmful_level"],
            "principle_index": row["principle_index"],
            "method": row["method"],
            "messages": row.get("messages"),
            "answer": c.text.strip(),
            "num_tokens": c.num_tokens,
            "finish_reason": c.finish_reason,
            "policy_version": policy_version,
            "staleness": staleness,
        }
        for row, samples in zip(rows, completions, strict=True)
        for sample_index, c in enumerate(samples)
    ]
    return pa.Table.from_pylist(records, schema=ROLLOUTS)


class AdapterCache:
    """LoRA adapter folders on this engine's node, newest last; at most `keep` of them.

    An adapter that came through the object store is written to a private folder here; one
    given by `path` only is read from the run's storage (a copy in this node's scratch)."""

    def __init__(self, keep: int):
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix="raylign-adapters-"))
        self.folders: dict[str, str] = {}  # policy key -> folder

    def folder(self, policy: PolicyVersion) -> tuple[str, list[str]]:
        """The adapter's local folder, and the keys evicted to make room for it."""
        if policy.key in self.folders:
            self.folders[policy.key] = self.folders.pop(policy.key)  # now newest
            return self.folders[policy.key], []
        if policy.payload:
            # A fresh folder each time: a re-trained version must not overwrite a live adapter.
            fresh = tempfile.mkdtemp(prefix=f"v{policy.version}-", dir=self.root)
            folder = str(unpack_folder(ray.get(policy.payload[0]), fresh))
        elif policy.path is not None:
            folder = str(fetch(policy.path))  # a folder, or a copy from the run's storage
        else:
            raise ValueError(f"LoRA policy version {policy.version} has neither a payload nor a path")
        self.folders[policy.key] = folder
        evicted = list(self.folders)[: max(0, len(self.folders) - self.keep)]
        for key in evicted:
            old = self.folders.pop(key)
            if Path(old).is_relative_to(self.root):
                shutil.rmtree(old, ignore_errors=True)
        return folder, evicted


class Busy(NamedTuple):
    """One batch an engine generated, wall-clock seconds (time.time) on its node. An engine's
    intervals never overlap: batches in flight together share their time, each starting where
    the engine's previous one ended (the timeline counts an actor as doing one thing at a time)."""

    cycle: int
    stage: str
    batch: int
    start: float
    end: float


class RolloutEngine:
    """What both engines share: answering a batch of prompt rows as ROLLOUTS, and a record of
    the batches they were busy with, which the driver drains into the run's timeline."""

    policy: PolicyVersion

    def __init__(self):
        self._busy: list[Busy] = []
        self._busy_until = 0.0  # the end of the last interval recorded
        self._recording = threading.Lock()  # batches in flight end in threads of their own

    def answer(self, messages: list[str | list[dict]], policy: PolicyVersion, sampling: SamplingConfig,
               seed: int) -> list[list[Completion]]:
        raise NotImplementedError

    def generate(self, prompts: pa.Table, policy: PolicyVersion, sampling: SamplingConfig, cycle: int,
                 stage: str, seed: int, batch: int = 0, staleness: int = 0) -> pa.Table:
        """K sampled answers of `policy` for each prompt row, as a ROLLOUTS table."""
        started = time.time()
        rows = prompts.to_pylist()
        completions = self.answer([chat_of(r) for r in rows], policy, sampling, seed)
        # `policy`, not self.policy: another thread may have made its own active since.
        table = rollout_table(rows, completions, cycle, stage, policy.version, staleness)
        with self._recording:
            ended = time.time()
            self._busy.append(Busy(cycle, stage, batch, max(started, self._busy_until), ended))
            self._busy_until = ended
        return table

    def busy(self) -> list[Busy]:
        """The batches generated since the last call, oldest first."""
        with self._recording:
            busy, self._busy = self._busy, []
        return busy


def engine_class(backend: str):
    # Imported here: the engine modules import this one.
    if backend == "vllm":
        from raylign.actors.vllm_engine import VLLMGenerator

        return VLLMGenerator
    from raylign.actors.hf_engine import HFGenerator

    return HFGenerator


class GeneratorGroup:
    """`cfg.engines` engines, one placement-group bundle each; batches go round-robin."""

    def __init__(self, model_path: str, dtype: str, cfg: GeneratorConfig, lora_rank: int | None, seed: int,
                 timeout_s: float):
        self.cfg = cfg
        self.placement = place("generators", cfg, cfg.engines, timeout_s)
        actor = ray.remote(engine_class(cfg.backend))
        self.engines = [
            actor.options(
                num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, resources=cfg.resources,
                # A dead engine restarts and redoes the batches it had (each is a function of its seed).
                max_restarts=cfg.max_restarts, max_task_retries=cfg.max_restarts,
                # Threads, one per batch in flight; transformers' generate takes one batch at a time.
                max_concurrency=cfg.batches_in_flight if cfg.backend == "vllm" else 1,
                runtime_env={"env_vars": vllm_env(cfg.vllm, cfg.num_threads)},
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=i),
            ).remote(model_path, dtype, cfg, lora_rank, seed + i)
            for i in range(cfg.engines)
        ]
        self.timeout_s = timeout_s
        self._ready = [e.ready.remote() for e in self.engines]  # engines start while other roles are placed

    def ready(self) -> list[EngineInfo]:
        """Waits until every engine is up; one that cannot start (vLLM missing, model not found)
        raises here, with its error."""
        return ray.get(self._ready, timeout=self.timeout_s)

    def shutdown(self) -> None:
        """Stop the engines cleanly, then free their placement group."""
        ray.wait([e.shutdown.remote() for e in self.engines], num_returns=len(self.engines), timeout=60)
        for engine in self.engines:
            ray.kill(engine)
        remove_placement_group(self.placement)

    def num_batches(self, prompts: pa.Table) -> int:
        return -(-prompts.num_rows // self.cfg.batch_size)

    def generate(self, prompts: pa.Table, policy: PolicyVersion, sampling: SamplingConfig, cycle: int,
                 stage: str, seed: int, batches: Iterable[int] | None = None,
                 staleness: int = 0) -> dict[int, ray.ObjectRef]:
        """{batch index: its ROLLOUTS table, to come}, for every batch of `batch_size` prompts or
        for the indices given. Batch i is seeded by `seed + i` alone (the driver's seed for the
        stage, raylign.driver.sampling_seed), so generating it again (a restarted engine, a
        resumed run) gives the same answers. `staleness` is recorded on every row."""
        refs = {}
        for i in range(self.num_batches(prompts)) if batches is None else sorted(batches):
            batch = prompts.slice(i * self.cfg.batch_size, self.cfg.batch_size)
            engine = self.engines[i % len(self.engines)]
            refs[i] = engine.generate.remote(batch, policy, sampling, cycle, stage, seed + i, i, staleness)
        return refs

    def busy(self) -> list[tuple[int, Busy]]:
        """(engine index, batch) of every batch the engines generated since the last call; an
        engine that died since loses its record (its batches are generated again, and counted then)."""
        out = []
        for i, engine in enumerate(self.engines):
            try:
                out += [(i, b) for b in ray.get(engine.busy.remote(), timeout=self.timeout_s)]
            except ray.exceptions.RayError:
                continue
        return out


def vllm_env(cfg: VLLMConfig, num_threads: int) -> dict[str, str]:
    """Environment of an engine's process: vLLM reads these at import."""
    return {
        # In-process engine core: ~3 s to start instead of ~20 s, best throughput on CPU, and
        # the weights we load pass to the worker without a copy (CPU-NOTES).
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0" if cfg.in_process else "1",
        "VLLM_NO_USAGE_STATS": "1",
        # Threads from the config, not from the user's shell, Ray or the core count: in process,
        # vLLM's CPU worker keeps the count its process started with (set_num_threads is a
        # no-op there), and a multiprocess one would bind a thread per core of a NUMA node.
        "OMP_NUM_THREADS": str(num_threads),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    }
