"""Conversation logs as training prompts: read, redacted, cut into prompts, deduplicated.

`logs.path` is a JSONL file, a folder of them (read recursively, in path order) or a pyarrow
filesystem URI of either, in the OpenAI chat format serving stacks log: per line a `messages`
list of {role, content} turns (content a string or a list of `{type: text, text}` parts), or
a `request.messages` with the reply in `response.choices[0].message`; other keys are metadata.

Every user turn becomes a prompt, its earlier turns the context (system turns dropped, at most
`max_context_turns`, oldest first out until the chat fits `max_context_chars`). Each turn is
redacted (raylign/data/redaction.py) before anything else sees it: what leaves this module,
for the buffer, the judges, the logs and the reports, holds placeholders, never the values.
A line is read once: its digest (sha256 of its bytes) is recorded in the `conversations`
table with what became of it (taken, duplicate, bad with the problem, unredacted), so the
next cycle reads only lines added since, and a resumed run takes what the first start took.
Prompts are deduplicated against each other, earlier cycles' and the prompt set's.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple

import pyarrow as pa
import pyarrow.fs as pafs

from raylign.config import ConfigError, LogsConfig
from raylign.data.schemas import CONVERSATIONS, PROMPTS, chat_of
from raylign.storage import is_uri

if TYPE_CHECKING:  # Presidio takes seconds to import: only a run with logs loads it
    from raylign.data.redaction import Redactor

LOGS_SPLIT = "logs"
"""The `split` (and `method`) of prompts from the logs."""
TAKEN, DUPLICATE, BAD, UNREDACTED = "taken", "duplicate", "bad", "unredacted"
_ROLES = ("system", "developer", "user", "assistant", "tool")
_SPACE = re.compile(r"\s+")


class LogError(ConfigError):
    """A logs.path that cannot be read at all (not there, not openable), in one line."""


class LogLine(NamedTuple):
    source: str  # the file, relative to logs.path
    line: int  # from 1
    digest: str
    text: str


class LogBatch(NamedTuple):
    """What one cycle took from the logs."""

    prompts: pa.Table
    """PROMPTS rows of unknown harm level (the prompt classifier gives it)."""
    conversations: pa.Table
    """CONVERSATIONS rows: every line read this cycle and what became of it."""
    summary: dict
    """Counts for the cycle's record: files, conversations by status, prompts, duplicates,
    oversized turns, redactions by kind, and the bad lines listed by file and line."""


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    location = path if is_uri(path) else str(Path(path.removeprefix("file://")).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(location)
    except (ValueError, OSError) as e:
        raise LogError(f"logs.path {path}: {str(e).splitlines()[0]}") from None


def log_files(path: str) -> tuple[pafs.FileSystem, list[tuple[str, str]]]:
    """The JSONL files under `path` as (full path, path relative to it), in order."""
    fs, root = _filesystem(path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise LogError(f"logs.path {path} does not exist")
    if info.type == pafs.FileType.File:
        return fs, [(root, info.base_name)]
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(f.path for f in found if f.is_file and f.path.endswith(".jsonl")
                   and not f.base_name.startswith("."))
    return fs, [(f, f[len(root.rstrip("/")) + 1:]) for f in files]


def read_lines(path: str) -> Iterator[LogLine]:
    """Every non-blank line of every log file, with its digest."""
    fs, files = log_files(path)
    for full, rel in files:
        with fs.open_input_stream(full) as f:
            data = f.read()
        for i, raw in enumerate(data.split(b"\n")):
            if raw.strip():
                yield LogLine(rel, i + 1, hashlib.sha256(raw.strip()).hexdigest(),
                              raw.decode("utf-8", errors="replace"))


def _text(content) -> str | None:
    """A turn's text: a string, or a list of text parts (images and audio parts left out)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = [p.get("text") for p in content if p.get("type") in ("text", "input_text")]
        if all(isinstance(p, str) for p in parts):
            return "\n".join(parts)
    return None


def conversation_turns(record) -> list[dict]:
    """The conversation's turns as {role, content}; raises ValueError naming what is wrong
    (never quoting the text)."""
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    messages = record.get("messages")
    if messages is None and isinstance(record.get("request"), dict):
        messages = record["request"].get("messages")
        choices = (record.get("response") or {}).get("choices") if isinstance(record.get("response"), dict) else None
        if isinstance(messages, list) and isinstance(choices, list) and choices and isinstance(choices[0], dict):
            messages = [*messages, choices[0].get("message")]
    if not isinstance(messages, list) or not messages:
        raise ValueError("no messages list (or request.messages)")
    turns = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict) or turn.get("role") not in _ROLES:
            raise ValueError(f"turn {i}: role must be one of {', '.join(_ROLES)}")
        text = _text(turn.get("content"))
        if text is None and turn["role"] in ("user", "assistant") and turn.get("content") is not None:
            raise ValueError(f"turn {i}: content must be text or a list of text parts")
        if turn["role"] in ("user", "assistant") and text is not None:
            turns.append({"role": turn["role"], "content": text})
    if not any(t["role"] == "user" for t in turns):
        raise ValueError("no user turn")
    return turns


def prompt_chats(turns: list[dict], cfg: LogsConfig) -> tuple[list[list[dict]], int]:
    """A chat per non-empty user turn, ending with it; and how many user turns were too long
    to be a prompt (over max_context_chars alone)."""
    chats, oversized = [], 0
    for i, turn in enumerate(turns):
        if turn["role"] != "user" or not turn["content"].strip():
            continue
        if len(turn["content"]) > cfg.max_context_chars:
            oversized += 1
            continue
        context = turns[max(0, i - cfg.max_context_turns):i] if cfg.max_context_turns else []
        while context and sum(len(t["content"]) for t in context) + len(turn["content"]) > cfg.max_context_chars:
            context = context[1:]
        while context and context[0]["role"] != "user":  # a chat opens with the user
            context = context[1:]
        chats.append([*context, turn])
    return chats, oversized


def text_key(chat: list[dict]) -> str:
    """What two prompts share when they are the same prompt: the chat's words, case and
    spacing aside."""
    return "\n".join(f"{t['role']}: {_SPACE.sub(' ', t['content']).strip().lower()}" for t in chat)


def known_keys(prompts: pa.Table) -> set[str]:
    """The text keys of prompts already held (the prompt set's, earlier cycles' log prompts)."""
    return {text_key(chat_of(row)) for row in prompts.select(["prompt", "messages"]).to_pylist()}


def _parsed(line: LogLine) -> tuple[dict | None, list[dict], str | None]:
    """The line's record and turns, or the problem with it (a position, never the text)."""
    try:
        record = json.loads(line.text)
        return record, conversation_turns(record), None
    except json.JSONDecodeError as e:
        return None, [], f"not JSON ({e.msg} at column {e.colno})"
    except ValueError as e:
        return None, [], str(e)


def collect(cfg: LogsConfig, cycle: int, seen: set[str], known: set[str], redactor: "Redactor") -> LogBatch:
    """The conversations not read before (digests not in `seen`), redacted and cut into
    prompts that are not in `known` (text keys), up to max_conversations of them."""
    from raylign.data.redaction import names_in

    prompts, rows = [], []
    redactions: Counter = Counter()
    counts: Counter = Counter()
    problems: list[str] = []
    files: set[str] = set()
    taken_digests: set[str] = set()
    for line in read_lines(cfg.path):
        if line.digest in seen:
            continue
        if cfg.max_conversations is not None and counts[TAKEN] >= cfg.max_conversations:
            break
        files.add(line.source)
        row = {"cycle": cycle, "source": line.source, "line": line.line, "digest": line.digest, "problem": None,
               "prompts": 0}
        if line.digest in taken_digests:
            rows.append({**row, "status": DUPLICATE})
            counts[DUPLICATE] += 1
            continue
        taken_digests.add(line.digest)
        record, turns, problem = _parsed(line)
        if problem is not None:
            rows.append({**row, "status": BAD, "problem": problem})
            problems.append(f"{line.source}:{line.line}: {problem}")
            counts[BAD] += 1
            continue
        try:
            names = names_in(record, cfg.redaction.name_fields)
            redacted, found = [], Counter()
            for turn in turns:
                result = redactor.redact(turn["content"], names)
                redacted.append({"role": turn["role"], "content": result.text})
                found.update(result.counts)
        except Exception as e:  # noqa: BLE001 - any failure: the conversation is not kept
            rows.append({**row, "status": UNREDACTED, "problem": f"redaction failed: {type(e).__name__}"})
            counts[UNREDACTED] += 1
            continue
        redactions.update(found)
        chats, oversized = prompt_chats(redacted, cfg)
        counts["oversized_turns"] += oversized
        new = 0
        for chat in chats:
            key = text_key(chat)
            if key in known:
                counts["duplicate_prompts"] += 1
                continue
            known.add(key)
            new += 1
            prompts.append({"id": "log-" + hashlib.sha256(key.encode()).hexdigest()[:12], "prompt": chat[-1]["content"],
                            "harmful_level": None, "principle_index": None, "method": LOGS_SPLIT, "split": LOGS_SPLIT,
                            "messages": chat if len(chat) > 1 else None, "category": None, "reference": None})
        rows.append({**row, "status": TAKEN, "prompts": new})
        counts[TAKEN] += 1
    summary = {
        "files": len(files), "conversations": counts[TAKEN], "duplicate_conversations": counts[DUPLICATE],
        "bad_lines": counts[BAD], "unredacted": counts[UNREDACTED], "prompts": len(prompts),
        "duplicate_prompts": counts["duplicate_prompts"], "oversized_turns": counts["oversized_turns"],
        "redactions": dict(sorted(redactions.items())), "problems": problems[:20],
    }
    return LogBatch(pa.Table.from_pylist(prompts, schema=PROMPTS), pa.Table.from_pylist(rows, schema=CONVERSATIONS),
                    summary)
