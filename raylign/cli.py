"""The `raylign` command.

    raylign run [CONFIG] [--set KEY=VALUE ...] [--out DIR] [--log-format text|json]
    raylign run --resume RUN [CONFIG] [--set cycles=N] [--set KEY=VALUE ...]
    raylign train FILE [FILE ...] [--config CONFIG] [--algorithm dpo|kto|modpo] [--epochs N] [--cycles N]
                  [--reference FILE [--embedding-model MODEL]] [--set KEY=VALUE ...] [--out DIR]
    raylign eval [CONFIG] [--policy POLICY] [--against POLICY] [--set KEY=VALUE ...] [--out DIR]
    raylign buffer export RUN [--format parquet|jsonl|hf] [--out DIR]
    raylign buffer import FILE RUN
    raylign buffer stats RUN
    raylign report RUN [RUN ...] [--out DIR]
    raylign review export RUN --cycle N [--size 200] [--stage train] [--seed 0] [--show-labels] [--out DIR]
    raylign review import FILE RUN [--on-invalid error|skip]

With no CONFIG, runs the embedded default (configs/local.yaml holds the same values): the
project's own tiny model, the bundled CARES-schema prompt set and the rules judge, on a local
Ray. On a cluster the same command runs as the job's entry point (see README). `--resume`
continues a run that died (or finished) at its first unfinished stage, with the config it
started with; where it runs (resources, replicas, engines, addresses) may change, through
--set or a CONFIG written for another cluster, and what it computes may not. RUN, like --out,
is a folder or a storage URI (s3://bucket/runs/r1). `eval` evaluates a policy (a model, an
adapter, or a run and one of its cycles) on the evaluation suites without training, or two
side by side. `train` is offline preference training: DPO, KTO or MODPO on given preference or
unpaired files (TRL's formats) for a number of epochs, then the evaluation suites, with the same
learner group, checkpoints and `run --resume` as cycles; `--reference` adds a suite of
questions with expert answers, scored by reference metrics. `review export` writes a sample
of a cycle's judged answers for clinicians to label (CSV and JSONL, blind unless --show-labels);
`review import` checks a filled-in file and stores its labels as judgments of the judge `human`
(raylign/evaluation/review.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from raylign.config import Config, ConfigError, load_config, parse_config
from raylign.data.exchange import ExchangeError
from raylign.data.prompts import PromptSetError, listed
from raylign.evaluation import review
from raylign.events import FORMATS, RunLog
from raylign.model_check import ModelError
from raylign.storage import RunStorage, StorageError, is_uri


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run alignment cycles")
    run.add_argument("config", nargs="?", help="YAML config (default: the embedded default)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value by its dotted key, e.g. --set cycles=2 (repeatable)")
    run.add_argument("--out", help="run folder or storage URI, e.g. s3://bucket/runs/r1 (default: runs/<date-time>)")
    run.add_argument("--resume", metavar="RUN", help="continue the run in RUN (a folder or storage URI) at its first "
                                                     "unfinished stage; a CONFIG with it may place it differently")
    run.add_argument("--log-format", choices=FORMATS, default="text",
                     help="text: progress bars, a line per cycle and the table (default); json: one JSON object per "
                          "event on stdout, for job logs (raylign/events.py)")
    train = sub.add_parser("train", help="offline preference training on given files, then evaluation")
    train.add_argument("files", nargs="+", metavar="FILE", help="preference (prompt/chosen/rejected) or unpaired "
                       "(prompt/completion/label) file: JSONL, Parquet or CSV")
    train.add_argument("--config", help="YAML config: model, learner, judges, suites (default: the embedded default)")
    train.add_argument("--algorithm", choices=["dpo", "kto", "modpo"], help="default: the config's algorithm")
    train.add_argument("--epochs", type=int, help="passes over the files (learner.epochs)")
    train.add_argument("--cycles", type=int, default=1, help="rounds of EPOCHS passes, each evaluated (default 1)")
    train.add_argument("--reference", metavar="FILE", help="questions with expert answers (question, answer "
                       "columns): an evaluation suite `reference` scored by ROUGE-L, BLEU, embedding similarity, "
                       "readability and length")
    train.add_argument("--embedding-model", help="the reference suite's embedding model: a folder or hub id "
                       "(default: the schema's, evaluation.suites[].embedding_model)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (repeatable)")
    train.add_argument("--out", help="run folder or storage URI (default: runs/<date-time>)")
    train.add_argument("--log-format", choices=FORMATS, default="text",
                       help="text, or json: one event per line on stdout")
    ev = sub.add_parser("eval", help="evaluate a policy (or two side by side) on the suites, without training")
    ev.add_argument("config", nargs="?", help="YAML config: suites, judges, sampling (default: the embedded "
                                               "default, or the run's own config.yaml when --policy is a run)")
    ev.add_argument("--policy", help="embedded, a model folder or hub id, a LoRA adapter folder (on model.path), or "
                                     "a run folder, RUN@N for its cycle N, RUN@best for its best (default: model.path)")
    ev.add_argument("--against", help="a second policy, shown side by side with the first, with the differences")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value by its dotted key (repeatable)")
    ev.add_argument("--out", help="eval folder (default: runs/eval-<date-time>)")
    buffer = sub.add_parser("buffer", help="export, import or count a run's preference buffer")
    action = buffer.add_subparsers(dest="action", required=True)
    export = action.add_parser("export", help="pairs and KTO examples in TRL's formats")
    export.add_argument("run", help="run folder")
    export.add_argument("--format", default="parquet", choices=["parquet", "jsonl", "hf"])
    export.add_argument("--out", help="folder to write (default: RUN/export-FORMAT)")
    imp = action.add_parser("import", help="a preference (prompt/chosen/rejected) or unpaired "
                                           "(prompt/completion/label) file into the buffer, at cycle 0")
    imp.add_argument("file")
    imp.add_argument("run", help="run folder")
    stats = action.add_parser("stats", help="rows per table, pairs per harm level, label balance, per cycle")
    stats.add_argument("run", help="run folder")
    report = sub.add_parser("report", help="report.html (self-contained) and report.md of a run, or of several "
                                           "side by side")
    report.add_argument("runs", nargs="+", metavar="RUN", help="run folder or storage URI")
    report.add_argument("--out", help="folder or storage URI to write them to (default: the run's own; "
                                      "needed for several runs)")
    reviewing = sub.add_parser("review", help="clinician review: a sample of judged answers out, people's labels in")
    step = reviewing.add_subparsers(dest="action", required=True)
    rexport = step.add_parser("export", help="a stratified, seeded sample of a cycle's judged answers to label, "
                                             "as CSV and JSONL")
    rexport.add_argument("run", help="run folder or storage URI")
    rexport.add_argument("--cycle", type=int, required=True, help="the cycle whose answers to review")
    rexport.add_argument("--size", type=int, help="answers to sample (default 200)")
    rexport.add_argument("--stage", help="the answers' stage in the buffer (default train: those trained on)")
    rexport.add_argument("--seed", type=int, help="sampling seed (default 0)")
    rexport.add_argument("--show-labels", action="store_true", help="add the judge's label (default: blind)")
    rexport.add_argument("--out", help="folder or storage URI to write to (default: RUN/review)")
    rimport = step.add_parser("import", help="a filled-in review file's labels, as judgments of the judge `human`")
    rimport.add_argument("file", help="the review file, .csv or .jsonl")
    rimport.add_argument("run", help="run folder or storage URI")
    rimport.add_argument("--on-invalid", choices=review.ON_INVALID,
                         help="bad rows: error imports nothing, skip imports the rest (default: review.on_invalid)")
    return parser


def _buffer_of(run: str):
    """The buffer of a run: where its config.yaml puts it, else RUN/buffer."""
    from raylign.actors.buffer import PreferenceBuffer

    storage = RunStorage(run)
    if storage.is_empty():
        raise ConfigError(f"run folder {run} does not exist")
    root = _stored_config(storage).buffer.root if storage.exists("config.yaml") else None
    return PreferenceBuffer(root or storage.uri("buffer"))


def _stored_config(storage: RunStorage, overrides: list[str] = ()) -> Config:
    return parse_config(storage.read_text("config.yaml"), storage.uri("config.yaml"), overrides)


def _buffer_command(args) -> None:
    from raylign.data import exchange

    buffer = _buffer_of(args.run)
    if args.action == "export":
        if args.out is None and is_uri(args.run):
            raise ConfigError(f"{args.run} is in object storage: give --out, a local folder to export to")
        out = Path(args.out or Path(args.run) / f"export-{args.format}")
        for name, rows in exchange.export_buffer(buffer, out, args.format).items():
            print(f"{name}: {rows} rows")
        print(f"written to {out}")
    elif args.action == "import":
        imported = exchange.import_file(Path(args.file))
        buffer.write(imported.table, 0, f"import-{Path(args.file).stem}", imported.data)
        print(f"{imported.data.num_rows} rows into {imported.table}, cycle 0")
    else:
        print(json.dumps(exchange.buffer_stats(buffer), indent=2))


def _review_command(args) -> None:
    if args.action == "export":
        given = {"size": args.size, "stage": args.stage, "seed": args.seed, "out": args.out}
        written = review.export_review(args.run, args.cycle, blind=not args.show_labels,
                                       **{k: v for k, v in given.items() if v is not None})
        rows = len(review.read_review(written[-1]).rows)
        shown = "the judge's labels shown" if args.show_labels else "blind"
        print(f"{rows} answers of cycle {args.cycle} to review ({shown}): written {written[0]} and {written[1]}")
        return
    result = review.import_review(args.file, args.run, args.on_invalid)
    cycles = ", ".join(map(str, result.cycles))
    where = f"cycle(s) {cycles}, part {result.part}" if result.accepted else "nothing stored"
    print(f"{result.accepted} label(s) imported as judge {review.HUMAN} ({where}); "
          f"{result.not_reviewed} row(s) not reviewed")
    if result.problems:
        print(f"skipped {listed(result.problems)}")


def _resumed_config(args) -> tuple[Config, RunStorage]:
    """The config a run started with (RUN/config.yaml), or a CONFIG that places the same run
    on another cluster, with the overrides; the driver refuses any change to what it computes."""
    storage = RunStorage(args.resume)
    if args.out:
        raise ConfigError("--resume RUN continues RUN where it is stored: give no --out")
    if not storage.exists("config.yaml"):
        raise ConfigError(f"{args.resume} has no config.yaml: not a raylign run folder")
    overrides = [*args.overrides, f"out={storage.location}"]
    if args.config:
        return load_config(args.config, overrides), storage
    return _stored_config(storage, overrides), storage


def _train_config(args) -> Config:
    """The config of `raylign train`: the files as imports, trained on alone, then the options."""
    overrides = ["train_on=imports", f"buffer.imports={json.dumps(args.files)}", f"cycles={args.cycles}"]
    overrides += [f"algorithm={args.algorithm}"] if args.algorithm else []
    overrides += [f"learner.epochs={args.epochs}"] if args.epochs is not None else []
    overrides += [*args.overrides, *([f"out={args.out}"] if args.out else [])]
    cfg = load_config(args.config, overrides)
    if args.reference:
        reference = {"name": "reference", "kind": "reference", "path": args.reference}
        if args.embedding_model:
            reference["embedding_model"] = args.embedding_model
        suites = [*cfg.model_dump(mode="json")["evaluation"]["suites"], reference]
        cfg = load_config(args.config, [*overrides, f"evaluation.suites={json.dumps(suites)}"])
    return cfg


def _eval_command(args) -> None:
    policy = args.policy
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    overrides = [*args.overrides, f"out={args.out or Path('runs') / f'eval-{stamp}'}"]
    run = RunStorage(policy.rpartition("@")[0] if "@" in policy else policy) if policy else None
    if args.config is None and run is not None and run.exists("config.yaml") and run.exists("state.json"):
        cfg = _stored_config(run, overrides)  # the run's own suites, judges, sampling and seed
    else:
        cfg = load_config(args.config, overrides)
    from raylign.evaluate import evaluate  # Ray and torch load only once the config is good

    evaluate(cfg, [policy or cfg.model.path] + ([args.against] if args.against else []), cfg.out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = RunLog(args.log_format) if args.command in ("run", "train") else None
    try:
        if args.command == "buffer":
            _buffer_command(args)
            return 0
        if args.command == "review":
            _review_command(args)
            return 0
        if args.command == "report":
            from raylign.evaluation.run_report import build_report  # matplotlib loads only for a report

            for written in build_report(args.runs, args.out):
                print(f"written {written}")
            return 0
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if args.command == "eval":
            _eval_command(args)
            return 0
        resume = args.command == "run" and bool(args.resume)
        if resume:
            cfg, run_dir = _resumed_config(args)
        else:
            cfg = (_train_config(args) if args.command == "train" else
                   load_config(args.config, list(args.overrides) + ([f"out={args.out}"] if args.out else [])))
            run_dir = cfg.out or str(Path("runs") / datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S"))
        from raylign.driver import Driver  # Ray and torch load only once the config is good

        with log.owning_stdout():  # --log-format json: only the events on stdout
            Driver(cfg, run_dir, log=log, resume=resume).run()
    except (ConfigError, PromptSetError, ExchangeError, ModelError, StorageError, review.ReviewError) as e:
        print(f"raylign: error: {e}", file=sys.stderr)
        if log is not None:
            log.run_end(None, e)
        return 2
    except BaseException as e:
        if log is not None:
            log.run_end(None, e)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
