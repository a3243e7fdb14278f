"""Several Ray nodes on one machine (`ray.cluster_utils.Cluster`): the node that holds the judge
replica is removed mid-cycle, and the run finishes with every answer judged exactly once.

The head node carries the generator, the learner, the buffer and the rules judge (a custom
resource pins them, as cluster.yaml's node types do); two judge nodes carry a second judge, one
replica at a time: a latency-bound LLM judge (an endpoint on loopback), so that judging is under
way when its node goes.
"""

import threading
import time

import pyarrow.parquet as pq
import pytest
import ray

from raylign.config import load_config
from raylign.driver import Driver
from raylign.testing import LoopbackJudgeServer, live_actors


@pytest.fixture(scope="module")
def cluster():
    from ray import serve
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"head": 1}})
    judge_nodes = [cluster.add_node(num_cpus=1, resources={"judge": 1}) for _ in range(2)]
    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    yield cluster, judge_nodes
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


def nodes_of_actors(class_prefix: str) -> list[str]:
    """The nodes of the live actors whose class name starts with `class_prefix`."""
    return [a["Address"]["NodeID"] for a in live_actors(class_prefix)]


def test_the_run_finishes_when_the_judge_replicas_node_is_removed_mid_cycle(cluster, model_path, tmp_path):
    cluster, judge_nodes = cluster
    pinned = "{head: 0.01}"
    with LoopbackJudgeServer(delay_s=0.02) as server:
        cfg = load_config(overrides=[
            "cycles=1", "prompts.prompts_per_cycle=16", "evaluation.suites.0.max_prompts=16", "learner.epochs=1",
            "generator.batch_size=4", f"model.path={model_path}", f"ray.address={cluster.address}",
            f"generator.resources={pinned}", f"learner.resources={pinned}", f"buffer.resources={pinned}",
            f"judges=[{{name: rules, resources: {pinned}}}, {{name: llm, kind: llm, resources: {{judge: 1}}, "
            f"llm: {{endpoint: '{server.url}', concurrency: 1}}}}]",
        ])
        replica = f"ServeReplica:raylign-{tmp_path.name}-llm"
        eval_answers = 16 * cfg.evaluation.sampling.samples_per_prompt
        train_answers = 16 * cfg.generator.sampling.samples_per_prompt
        removed, replaced = [], []

        def remove_the_judges_node_during_training_judging():
            while server.requests < eval_answers + train_answers // 3:
                time.sleep(0.005)
            (held,) = nodes_of_actors(replica)
            (node,) = [n for n in judge_nodes if n.node_id == held]
            cluster.remove_node(node, allow_graceful=False)
            removed.append((held, server.requests))
            deadline = time.monotonic() + 120
            while not (survivors := [n for n in nodes_of_actors(replica) if n != held]) and time.monotonic() < deadline:
                time.sleep(0.1)
            replaced.extend(survivors)

        remover = threading.Thread(target=remove_the_judges_node_during_training_judging, daemon=True)
        remover.start()
        records = Driver(cfg, tmp_path, log=lambda _: None).run()
        remover.join(timeout=5)
    print(f"removed node {removed[0][0][:8]} after {removed[0][1]} requests; the replica came back on "
          f"{[n[:8] for n in replaced]}; the endpoint answered {server.requests} requests for "
          f"{2 * eval_answers + train_answers} answers")
    assert removed and removed[0][1] < eval_answers + train_answers  # while the training answers were judged
    assert replaced == [n.node_id for n in judge_nodes if n.node_id != removed[0][0]]  # on the other judge node
    judged = [r for cycle in (0, 1) for r in pq.read_table(tmp_path / "buffer" / "judgments" / f"cycle={cycle}").to_pylist()]
    for judge in ("rules", "llm"):
        keys = [(r["cycle"], r["stage"], r["prompt_id"], r["sample_index"]) for r in judged if r["judge"] == judge]
        assert len(keys) == len(set(keys)) == 2 * eval_answers + train_answers  # every answer once
    assert {r["label"] for r in judged if r["judge"] == "llm"} == {"Accept"}  # none Unjudged
    assert [r["cycle"] for r in records] == [0, 1] and records[1]["training"]["steps"] > 0
