"""The `raylign` command.

    raylign run [CONFIG] [--set KEY=VALUE ...] [--out DIR]
    raylign run --resume RUN [--set cycles=N] [--set ray.KEY=VALUE ...]
    raylign eval [CONFIG] [--policy POLICY] [--against POLICY] [--set KEY=VALUE ...] [--out DIR]
    raylign buffer export RUN [--format parquet|jsonl|hf] [--out DIR]
    raylign buffer import FILE RUN
    raylign buffer stats RUN

With no CONFIG, runs the embedded default (configs/local.yaml holds the same values): the
project's own tiny model, the bundled CARES-schema prompt set and the rules judge, on a local
Ray. On a cluster the same command runs as the job's entry point (see README). `--resume`
continues a run that died (or finished) at its first unfinished stage, with the config it
started with. `eval` evaluates a policy (a model, an adapter, or a run and one of its cycles)
on the evaluation suites without training, or two side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from raylign.config import RESUMABLE_KEYS, Config, ConfigError, load_config
from raylign.data.exchange import ExchangeError
from raylign.data.prompts import PromptSetError
from raylign.model_check import ModelError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run alignment cycles")
    run.add_argument("config", nargs="?", help="YAML config (default: the embedded default)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value by its dotted key, e.g. --set cycles=2 (repeatable)")
    run.add_argument("--out", help="run folder (default: runs/<date-time>)")
    run.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN at its first unfinished stage")
    ev = sub.add_parser("eval", help="evaluate a policy (or two side by side) on the suites, without training")
    ev.add_argument("config", nargs="?", help="YAML config: suites, judges, sampling (default: the embedded "
                                               "default, or the run's own config.yaml when --policy is a run)")
    ev.add_argument("--policy", help="embedded, a model folder or hub id, a LoRA adapter folder (on model.path), or "
                                     "a run folder, RUN@N for its cycle N (default: model.path)")
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
    return parser


def _buffer_of(run: Path):
    """The buffer of a run folder: where its config.yaml puts it, else RUN/buffer."""
    from raylign.actors.buffer import PreferenceBuffer

    if not run.is_dir():
        raise ConfigError(f"run folder {run} does not exist")
    root = load_config(run / "config.yaml").buffer.root if (run / "config.yaml").is_file() else None
    return PreferenceBuffer(root or str(run / "buffer"))


def _buffer_command(args) -> None:
    from raylign.data import exchange

    run = Path(args.run)
    buffer = _buffer_of(run)
    if args.action == "export":
        out = Path(args.out or run / f"export-{args.format}")
        for name, rows in exchange.export_buffer(buffer, out, args.format).items():
            print(f"{name}: {rows} rows")
        print(f"written to {out}")
    elif args.action == "import":
        table, data = exchange.import_file(Path(args.file))
        buffer.write(table, 0, f"import-{Path(args.file).stem}", data)
        print(f"{data.num_rows} rows into {table}, cycle 0")
    else:
        print(json.dumps(exchange.buffer_stats(buffer), indent=2))


def _resumed_config(args) -> tuple[Config, Path]:
    """The config a run started with (RUN/config.yaml), with the overrides a resume may make."""
    run = Path(args.resume)
    if args.config or args.out:
        raise ConfigError("--resume RUN continues RUN with its own config.yaml and folder: give no CONFIG or --out")
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run} has no config.yaml: not a raylign run folder")
    for assignment in args.overrides:
        key = assignment.split("=", 1)[0].strip()
        if key.split(".")[0] not in RESUMABLE_KEYS:
            raise ConfigError(f"--resume: --set {key} would change what the run computes; only "
                              f"{', '.join(RESUMABLE_KEYS)} may be set (start a new run to change the rest)")
    return load_config(run / "config.yaml", [*args.overrides, f"out={run}"]), run


def _eval_command(args) -> None:
    policy = args.policy
    config = args.config
    run = Path(policy.rpartition("@")[0] if policy and "@" in policy else policy or "")
    if config is None and policy and (run / "config.yaml").is_file() and (run / "state.json").is_file():
        config = run / "config.yaml"  # the run's own suites, judges, sampling and seed
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S")
    cfg = load_config(config, [*args.overrides, f"out={args.out or Path('runs') / f'eval-{stamp}'}"])
    from raylign.evaluate import evaluate  # Ray and torch load only once the config is good

    evaluate(cfg, [policy or cfg.model.path] + ([args.against] if args.against else []), Path(cfg.out))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "buffer":
            _buffer_command(args)
            return 0
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if args.command == "eval":
            _eval_command(args)
            return 0
        if args.resume:
            cfg, run_dir = _resumed_config(args)
        else:
            cfg = load_config(args.config, list(args.overrides) + ([f"out={args.out}"] if args.out else []))
            run_dir = Path(cfg.out or Path("runs") / datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S"))
        from raylign.driver import Driver  # Ray and torch load only once the config is good

        Driver(cfg, run_dir, resume=bool(args.resume)).run()
    except (ConfigError, PromptSetError, ExchangeError, ModelError) as e:
        print(f"raylign: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
