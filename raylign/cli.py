"""The `raylign` command.

    raylign run [CONFIG] [--set KEY=VALUE ...] [--out DIR]

With no CONFIG, runs the embedded default (configs/local.yaml holds the same values): the
project's own tiny model, the bundled CARES-schema prompt set and the rules judge, on a local
Ray. On a cluster the same command runs as the job's entry point (see README).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from raylign.config import ConfigError, load_config
from raylign.prompts import PromptSetError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run alignment cycles")
    run.add_argument("config", nargs="?", help="YAML config (default: the embedded default)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value by its dotted key, e.g. --set cycles=2 (repeatable)")
    run.add_argument("--out", help="run folder (default: runs/<date-time>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
        cfg = load_config(args.config, overrides)
        run_dir = Path(cfg.out or Path("runs") / datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S"))
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from raylign.driver import Driver  # Ray and torch load only once the config is good

        Driver(cfg, run_dir).run()
    except (ConfigError, PromptSetError) as e:
        print(f"raylign: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
