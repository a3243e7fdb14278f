"""The run's log: what `raylign run` tells whoever watches it, in one of two formats.

- `text` (the default): free-text lines through a `log` callable (print), a progress bar per
  stage, a line per evaluated cycle and the table at the end.
- `json` (`raylign run --log-format json`, for job logs): one JSON object per line on stdout,
  flushed as it happens; no progress bars and no table. Every object has `time` (ISO 8601,
  UTC), `event` and `run` (the run's folder or storage URI), and per event:

  | event       | fields                                                                      |
  |-------------|-----------------------------------------------------------------------------|
  | run_start   | cycles, resume (bool)                                                       |
  | resume      | finished (stages finished before), next_cycle, next_stage (null: none left) |
  | stage_start | cycle, stage                                                                |
  | stage_end   | cycle, stage, seconds                                                       |
  | cycle       | cycle, safety_score, harmful_refusal_rate, erroneous_refusal_rate,          |
  |             | invalid_rate (the headline suite's), pairs, loss (null for cycle 0)         |
  | retry       | cycle, stage, role (`learner` or `judge.<name>`), retries                   |
  | message     | text: a free-text line of the text format                                   |
  | run_end     | metrics (where metrics.json is), error (null, or why the run stopped:       |
  |             | metrics then null)                                                          |

Figures that are not finite numbers (a loss with no training data) are written as null.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import sys
from typing import Callable, Iterator

FORMATS = ("text", "json")
HEADLINE = ("safety_score", "harmful_refusal_rate", "erroneous_refusal_rate", "invalid_rate")
"""The cycle's headline figures, as metrics.json has them at the top of each record."""


def cycle_figures(record: dict) -> dict:
    """A metrics.json record's headline figures: the headline suite's rates (null when the cycle
    evaluated none), the cycle's DPO pairs and mean training loss (null for cycle 0)."""
    training = record.get("training") or {}
    return {"cycle": record["cycle"], **{k: record.get(k) for k in HEADLINE},
            "pairs": training.get("pairs"), "loss": training.get("mean_loss")}


def _finite(value):
    """JSON has no NaN or infinity: null instead, in nested values too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class RunLog:
    """The driver's log. Called with a line (`log(line)`), it is the `log` callable the rest of
    raylign takes: the line is printed (text) or becomes a `message` event (json)."""

    def __init__(self, format: str = "text", run: str = "", write: Callable[[str], None] | None = None):
        if format not in FORMATS:
            raise ValueError(f"log format must be one of {', '.join(FORMATS)} (got {format!r})")
        self.format, self.run = format, run
        self.write = write or (print if format == "text" else self._print)
        self._stdout = sys.stdout  # where json events go, while `owning_stdout` sends the rest away

    def _print(self, line: str) -> None:
        print(line, file=self._stdout, flush=True)

    @classmethod
    def of(cls, log: "RunLog | Callable[[str], None]", run: str) -> "RunLog":
        """`log` for the run at `run`: a RunLog as it is (its run set), or a plain callable's
        lines in the text format (`log=print`, tests' `log=lambda _: None`)."""
        if isinstance(log, RunLog):
            log.run = run
            return log
        return cls("text", run, log)

    @property
    def bars(self) -> bool:
        """Whether stages show progress bars (tqdm's `disable` is its negation)."""
        return self.format == "text"

    @contextlib.contextmanager
    def owning_stdout(self) -> Iterator[None]:
        """json: stdout carries nothing but the events while the run goes; whatever else the
        process prints there (Ray's driver prints its notices about failed tasks to stdout) goes
        to stderr. Text: stdout as it is."""
        if self.format != "json":
            yield
            return
        with contextlib.redirect_stdout(sys.stderr):
            yield

    def _emit(self, event: str, **fields) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        record = {"time": now.replace("+00:00", "Z"), "event": event, "run": self.run, **_finite(fields)}
        self.write(json.dumps(record, allow_nan=False, default=str))

    def _text(self, line: str | None) -> None:
        if line is not None:
            self.write(line)

    # -- events ---------------------------------------------------------------------------

    def __call__(self, line: str) -> None:
        """A free-text line: printed, or a `message` event."""
        if self.format == "json":
            self._emit("message", text=line)
        else:
            self.write(line)

    def show(self, line: str) -> None:
        """A line for the terminal only (the table, where the run's files are): json drops it."""
        if self.format == "text":
            self.write(line)

    def run_start(self, cycles: int, resume: bool) -> None:
        if self.format == "json":
            self._emit("run_start", cycles=cycles, resume=resume)

    def resume(self, finished: int, where: tuple[int, str] | None, text: str | None = None) -> None:
        """A resumed run: `finished` stages done before, continuing at `where` (cycle, stage)."""
        if self.format == "json":
            self._emit("resume", finished=finished, next_cycle=where and where[0], next_stage=where and where[1])
        else:
            self._text(text)

    def stage_start(self, cycle: int, stage: str) -> None:
        if self.format == "json":
            self._emit("stage_start", cycle=cycle, stage=stage)

    def stage_end(self, cycle: int, stage: str, seconds: float) -> None:
        if self.format == "json":
            self._emit("stage_end", cycle=cycle, stage=stage, seconds=seconds)

    def cycle(self, record: dict, text: str | None = None) -> None:
        """An evaluated cycle: its metrics.json record (json: the headline figures), or `text`."""
        if self.format == "json":
            self._emit("cycle", **cycle_figures(record))
        else:
            self._text(text)

    def retry(self, cycle: int, stage: str, role: str, retries: int, text: str | None = None) -> None:
        """Work done again after a role failed: `role` is `learner` or `judge.<name>`."""
        if self.format == "json":
            self._emit("retry", cycle=cycle, stage=stage, role=role, retries=retries)
        else:
            self._text(text)

    def run_end(self, metrics: str | None, error: BaseException | str | None = None) -> None:
        """The run stopped: finished, with `metrics` where metrics.json is, or with `error`
        (then metrics is null). Text shows nothing: the table said it, or the error will."""
        if self.format == "json":
            if isinstance(error, BaseException):
                error = f"{type(error).__name__}: {error}".splitlines()[0]
            self._emit("run_end", metrics=metrics, error=error)
