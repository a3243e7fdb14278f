"""Data contracts between the stages: Arrow schemas and the small records roles return.

Every stage's output is an Arrow table with one of these schemas, written to the buffer before
the next stage reads it. Prompts follow CARES-18K's fields; pairs and KTO examples follow TRL's
conversational preference and unpaired formats, so an exported buffer trains with TRL as is.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import pyarrow as pa

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCORES = pa.map_(pa.string(), pa.float32())

PROMPTS = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("harmful_level", pa.int8()),  # 0-3; null for prompts of unknown harm
        ("principle_index", pa.int8()),
        ("method", pa.string()),
        ("split", pa.string()),
        ("messages", MESSAGES),  # a chat prompt's turns; null when `prompt` is one user message
        ("category", pa.string()),  # an evaluation suite's grouping (XSTest type, a harm category)
        ("reference", pa.string()),  # a reference answer, when the source gives one (MedSafetyBench)
    ]
)

# Prompt fields ride along with every answer so judges and metrics need no join.
_ANSWER_KEY = [
    ("cycle", pa.int32()),
    ("stage", pa.string()),  # "train" (rollouts for pairs) or "eval" (held-out)
    ("prompt_id", pa.string()),
    ("sample_index", pa.int32()),
]
_PROMPT_FIELDS = [
    ("prompt", pa.string()),
    ("harmful_level", pa.int8()),
    ("principle_index", pa.int8()),
    ("method", pa.string()),
    ("messages", MESSAGES),  # the chat the answer continues; null: `prompt` as one user turn
]

ROLLOUTS = pa.schema(
    _ANSWER_KEY
    + _PROMPT_FIELDS
    + [
        ("answer", pa.string()),
        ("num_tokens", pa.int32()),
        ("finish_reason", pa.string()),  # "stop" (eos) or "length" (hit max_new_tokens)
        ("policy_version", pa.int32()),  # the policy that answered (a cycle number; 0 the starting model)
        # Policy updates the answering policy lags the one trained on these answers: 0 on-policy,
        # up to pipeline.max_staleness when generation overlaps training. Null: not recorded.
        ("staleness", pa.int32()),
    ]
)

JUDGMENTS = pa.schema(
    list(ROLLOUTS)
    + [
        ("judge", pa.string()),
        ("judge_version", pa.string()),  # the model and rubric hash, or the rules' hash
        ("label", pa.string()),  # Accept / Caution / Refuse / Invalid, or Unjudged
        ("verdict", pa.string()),  # the judge's raw reasoning or rule, for audit
        ("safety_score", pa.float32()),  # null when Unjudged
        ("scores", SCORES),  # per objective (safety, helpfulness, ...), for MODPO margins
        ("latency_s", pa.float32()),
    ]
)

PAIRS = pa.schema(
    [
        ("cycle", pa.int32()),
        ("prompt_id", pa.string()),
        ("harmful_level", pa.int8()),
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("chosen_label", pa.string()),
        ("rejected_label", pa.string()),
        ("chosen_score", pa.float32()),
        ("rejected_score", pa.float32()),
        ("chosen_scores", SCORES),
        ("rejected_scores", SCORES),
    ]
)

KTO_EXAMPLES = pa.schema(
    [
        ("cycle", pa.int32()),
        ("prompt_id", pa.string()),
        ("harmful_level", pa.int8()),
        ("prompt", MESSAGES),
        ("completion", MESSAGES),
        ("label", pa.bool_()),  # desirable
        ("score", pa.float32()),
    ]
)

CONVERSATIONS = pa.schema(
    [
        ("cycle", pa.int32()),  # the cycle that read it
        ("source", pa.string()),  # the log file, relative to logs.path
        ("line", pa.int32()),  # its line in the file, from 1
        ("digest", pa.string()),  # sha256 of the raw line: the same conversation is read once
        ("status", pa.string()),  # taken | duplicate | bad | unredacted (redaction failed: nothing kept)
        ("problem", pa.string()),  # what was wrong with a bad line (never its text)
        ("prompts", pa.int32()),  # prompts it gave (user turns less duplicates)
    ]
)
"""What each cycle read from the conversation logs: a resumed run takes the same ones."""

PROMPT_LEVELS = pa.schema(
    [
        ("cycle", pa.int32()),
        ("prompt_id", pa.string()),
        ("harmful_level", pa.int8()),  # null: below the classifier's min_confidence
        ("predicted_level", pa.int8()),  # the classifier's best level, however confident
        ("confidence", pa.float32()),
        ("classifier", pa.string()),  # kind and version
        ("reason", pa.string()),  # the rule, label or reply behind the level
    ]
)
"""The prompt classifier's harm level for each prompt from the logs, with its confidence."""

TABLES = {
    "prompts": PROMPTS,
    "rollouts": ROLLOUTS,
    "judgments": JUDGMENTS,
    "pairs": PAIRS,
    "kto": KTO_EXAMPLES,
    "conversations": CONVERSATIONS,
    "prompt_levels": PROMPT_LEVELS,
}


class PolicyVersion(NamedTuple):
    """A policy the generators can load. Version 0 (`BASE`) is the starting model."""

    version: int
    kind: Literal["base", "lora", "full"] = "base"
    path: str | None = None
    """The durable copy the learner wrote: a PEFT adapter folder (lora) or a model folder (full)."""
    payload: tuple = ()
    """The same policy in Ray's object store (raylign/training/weights.py), so engines on nodes without
    the learner's filesystem can load it: lora, one ObjectRef to {file name: bytes}; full, one
    ObjectRef per safetensors bucket. Empty means the engines read `path`."""

    @property
    def key(self) -> str:
        """Identifies the policy's contents: a re-trained version gets a new key."""
        return self.payload[0].hex() if self.payload else f"{self.kind}:{self.path}"

    @property
    def tag(self) -> str:
        """Its name in the run: its folder's (`cycle_002`, `cycle_002-kto`; its checkpoint's
        too), or `initial` for the starting model."""
        if self.kind == "base" or self.path is None:
            return "initial"
        return self.path.partition("?")[0].rstrip("/").rsplit("/", 1)[-1]


BASE = PolicyVersion(0)


class TrainVariant(NamedTuple):
    """What a training call trains with: the algorithm, and the learner settings a selection
    candidate may change (raylign/config.py CandidateConfig)."""

    algorithm: str
    beta: float
    learning_rate: float
    loss_type: str


class TrainResult(NamedTuple):
    policy: PolicyVersion
    examples: int
    """Pairs (DPO) or examples (KTO) trained on, per epoch."""
    steps: int
    mean_loss: float
    final_loss: float
    seconds: float
    retries: int = 0
    """Times the training was run again after a rank died (learner.max_train_retries)."""
    step_losses: tuple[float, ...] = ()
    """Each step's batch-mean loss, in order."""


def user_turn(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def chat_of(row: dict) -> list[dict]:
    """The turns a prompt row (or an answer row) asks the model to continue."""
    return row.get("messages") or user_turn(row["prompt"])


def assistant_turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]
