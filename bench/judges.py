"""Judge pool throughput with 1, 2 and 4 replicas of a latency-bound judge, in one run.

    python bench/judges.py [--delay 0.2] [--rows 64]

The judge is the `llm` kind against an OpenAI-compatible endpoint on loopback that waits
--delay seconds per request (raylign/testing.py), one request in flight per replica, so the
pool's scaling is what is measured: a Ray Serve deployment of 1, 2 and 4 replicas, batches
queued in its router for the first free replica. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import ray
from ray import serve

from raylign.actors.judge import JudgePool
from raylign.config import JudgeConfig, LLMJudgeConfig
from raylign.testing import LoopbackJudgeServer, answer_rows, pool_throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rates = {}
    with LoopbackJudgeServer(delay_s=args.delay) as server:
        for replicas in (1, 2, 4):
            cfg = JudgeConfig(name="llm", kind="llm", replicas=replicas, num_cpus=0.25,
                              llm=LLMJudgeConfig(endpoint=server.url, concurrency=1))
            pool = JudgePool(cfg, app=f"bench-judges-{replicas}", timeout_s=300)
            rates[replicas], _ = pool_throughput(pool, answer_rows(args.rows, "Refuse"), batches=4)
            pool.shutdown()
            print(f"  {replicas} replica(s): {rates[replicas]:6.1f} rows/s")
    serve.shutdown()
    ray.shutdown()
    print(f"{args.rows} rows, {args.delay}s per request: 4 replicas / 1 = {rates[4] / rates[1]:.2f}x")
    print(json.dumps({f"rows_per_s_{r}": round(v, 2) for r, v in rates.items()}
                     | {"four_over_one": round(rates[4] / rates[1], 3)}))


if __name__ == "__main__":
    main()
