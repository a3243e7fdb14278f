"""Ray's autoscaler adds a judge node for raylign's judge pool, and removes it once the pool shrinks.

The cluster runs on Ray's fake multi-node provider (`provider: type: fake_multinode`,
RAY_FAKE_CLUSTER=1): the real autoscaler (v1, the one `ray start --autoscaling-config` runs), with
each "node" a set of Ray processes it starts and stops on this machine. The head is started the
way the provider supports, `ray start --head --autoscaling-config=tests/fixtures/cluster-fake.yaml`
(token authentication on, dashboard on loopback), with cluster.yaml's node types: the head
{buffer}, generator and learner nodes (one each) and judge nodes (0 to 2), each with its custom
resource.

The run is what `ray submit cluster.yaml raylign/cli.py -- run ~/raylign/configs/...` runs on the
head: `python ~/cli.py run ~/raylign/configs/cluster-cpu.yaml` in a home folder that holds the
repository as ~/raylign, joining the cluster. Its judges are the rules judge and an llm judge (a
latency-bound endpoint on loopback) that autoscales between 1 and 2 replicas; each replica takes
half a judge node. The autoscaler adds a first judge node for the rules
replica and the first llm replica when the run places them; the second llm replica needs a node
it must add while the run goes on. Proved: the autoscaler adds that judge node while the judge
backlog lasts, the llm replica placed there judges batches, the node is removed after the pool has
shrunk off it, and the run finishes with every answer judged once. The test prints how long the
autoscaler took to add and to remove the node.

`ray up` and `ray submit` themselves cannot run against this provider in Ray 2.60, for three
reasons, each reproduced by hand:
1. Both bootstrap the config through `prepare_config`, which merges the provider's defaults file,
   `ray/autoscaler/_private/fake_multi_node/example.yaml`; the wheel does not ship it
   (FileNotFoundError). The autoscaler on the head reads its config file as it is, so it runs.
2. The provider cannot make a head node: its head is a placeholder entry (id ffff...00000, no
   launch-config tag, no processes). `ray up` finds no up-to-date head, so it terminates the
   placeholder (KeyError: 'node', the entry has no processes to stop) to launch a new one, and
   `create_node` only starts worker raylets that join a GCS already running.
3. It has no command runner: `ray submit` (like `ray exec` and the node updater) falls back to
   SSHCommandRunner towards the node's IP, which for this provider is the node id, and runs
   `ssh root@ffff...00000 ...`. The Docker variant (fake_multinode_docker) has a `docker exec`
   runner, but needs a Docker daemon and the rayproject/ray image, which CI machines lack.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NamedTuple

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from raylign.testing import LoopbackJudgeServer, free_port, stop_process_trees

ROOT = Path(__file__).parents[1]


class FakeCluster(NamedTuple):
    root: Path
    address: str  # the GCS, for the driver
    dashboard: str
    env: dict[str, str]  # auth mode and token path: what a process needs to join
    token: str
    head: psutil.Popen

    def get(self, path: str, **params) -> dict:
        query = urllib.parse.urlencode(params, doseq=True)
        request = urllib.request.Request(f"{self.dashboard}{path}?{query}",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def nodes(self) -> list[dict]:
        return self.get("/api/v0/nodes", limit=1000, detail=1)["data"]["result"]["result"]

    def judge_nodes(self) -> set[str]:
        return {n["node_id"] for n in self.nodes() if n["state"] == "ALIVE" and "judge" in n["resources_total"]}


@pytest.fixture(scope="module")
def fake_cluster():
    root = Path(tempfile.mkdtemp(prefix="rl-as-"))  # short: Ray's socket paths live below it
    token = secrets.token_hex(32)
    (root / "auth_token").write_text(token)
    (root / "auth_token").chmod(0o600)
    gcs, dashboard = free_port(), free_port()
    config = yaml.safe_load((ROOT / "tests" / "fixtures" / "cluster-fake.yaml").read_text())
    config["provider"]["gcs_address"] = f"127.0.0.1:{gcs}"
    (root / "cluster.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(root / "auth_token"), RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    head_resources = config["available_node_types"]["ray.head.default"]["resources"]  # ray start's flags say them
    args = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address=127.0.0.1", f"--temp-dir={root / 'ray'}", f"--port={gcs}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--num-cpus={head_resources['CPU']}",
            f"--resources={json.dumps({k: v for k, v in head_resources.items() if k != 'CPU'})}",
            "--object-store-memory=268435456", f"--autoscaling-config={root / 'cluster.yaml'}"]
    head_env = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    t0 = time.monotonic()
    head = psutil.Popen(args, env=head_env, stdout=open(root / "head.out", "w"), stderr=subprocess.STDOUT,
                        start_new_session=True)  # its session: every process of the cluster, nodes added later too
    try:
        cluster = FakeCluster(root, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", env, token, head)
        # The head and a node of each min_workers type, and no change for 8 s: at start the autoscaler
        # sometimes launches a node twice (its launcher threads race) and removes the extra later.
        types = ["buffer", "generator", "learner"]
        last, since = None, time.monotonic()
        while True:
            assert head.poll() is None, f"the head exited: {(root / 'head.out').read_text()[-3000:]}"
            assert time.monotonic() - t0 < 180, f"no steady min_workers cluster in 180 s: {last}"
            try:
                alive = [n for n in cluster.nodes() if n["state"] == "ALIVE"]
            except OSError:  # the dashboard is not up yet
                alive = []
            kinds = sorted(t for n in alive for t in types if t in n["resources_total"])
            if kinds != last:
                last, since = kinds, time.monotonic()
            if kinds == types and time.monotonic() - since >= 8:
                break
            time.sleep(1)
        print(f"fake cluster: head and {len(alive) - 1} min_workers nodes up in {time.monotonic() - t0:.1f} s")
        yield cluster
    finally:
        left = stop_process_trees(head)  # the head's session: the autoscaler's nodes are in it
        shutil.rmtree(root, ignore_errors=True)
    assert left == [], f"processes of the fake cluster still running: {left}"


class Sample(NamedTuple):
    t: float  # seconds since the timeline started
    judge_nodes: set[str]  # alive
    target: int  # llm replicas the pool asks for
    replicas: dict[str, str | None]  # llm replica id -> its node (None while it waits for one)


class Timeline:
    """Once a second, from the dashboard: the judge nodes alive and the llm pool's replicas. It
    also keeps each replica's log file (Serve writes a line per call it served)."""

    def __init__(self, cluster: FakeCluster):
        self.cluster, self.t0 = cluster, time.monotonic()
        self.samples: list[Sample] = []
        self.logs: dict[str, str] = {}  # replica id -> its log file, relative to the session's logs folder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.wait(1.0):
            try:
                nodes = self.cluster.judge_nodes()
                apps = self.cluster.get("/api/serve/applications/").get("applications") or {}
            except OSError:
                continue
            target, replicas = 0, {}
            for name, app in apps.items():
                if name.endswith("-llm") and "llm" in app.get("deployments", {}):
                    llm = app["deployments"]["llm"]
                    target = llm.get("target_num_replicas") or 0
                    replicas = {r["replica_id"]: r.get("node_id") for r in llm.get("replicas", [])}
                    self.logs.update({r["replica_id"]: r["log_file_path"] for r in llm.get("replicas", [])
                                      if r.get("log_file_path")})
            self.samples.append(Sample(time.monotonic() - self.t0, nodes, target, replicas))

    def __enter__(self) -> "Timeline":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=15)

    def first(self, holds, after: float = 0.0) -> float | None:
        """When `holds(sample)` was first true, at or after `after`."""
        return next((s.t for s in self.samples if s.t >= after and holds(s)), None)


def test_the_autoscaler_adds_a_judge_node_for_the_pool_and_removes_it_after(fake_cluster, model_path, tmp_path):
    cluster = fake_cluster
    assert cluster.judge_nodes() == set()
    run_dir = tmp_path / "run"
    with LoopbackJudgeServer(delay_s=0.25) as server, Timeline(cluster) as timeline:
        judges = ("[{name: rules, kind: rules, replicas: 1, num_cpus: 1, resources: {judge: 0.5}}, "
                  "{name: llm, kind: llm, replicas: 1, min_replicas: 1, max_replicas: 2, target_backlog: 1, "
                  "upscale_delay_s: 0, downscale_delay_s: 5, look_back_period_s: 1, resources: {judge: 0.5}, "
                  f"llm: {{endpoint: '{server.url}', concurrency: 1}}}}]")
        overrides = ["cycles=1", "prompts.prompts_per_cycle=16", "evaluation.suites.0.max_prompts=16",
                     "learner.epochs=1", "generator.batch_size=4", f"model.path={model_path}", f"judges={judges}"]
        # What `ray submit cluster.yaml raylign/cli.py -- run ~/raylign/configs/...` runs on the
        # head: `python ~/cli.py run ...` in a home folder that holds the repository as ~/raylign
        # (cluster.yaml's file_mounts). RAY_ADDRESS is where `ray.address: auto` finds this
        # cluster (on a real head: Ray's address file).
        home = tmp_path / "home"
        home.mkdir()
        (home / "raylign").symlink_to(ROOT)
        shutil.copy(ROOT / "raylign" / "cli.py", home / "cli.py")
        command = [sys.executable, str(home / "cli.py"), "run", str(home / "raylign" / "configs" / "cluster-cpu.yaml"),
                   *[a for o in overrides for a in ("--set", o)], "--out", str(run_dir)]
        t_run = time.monotonic() - timeline.t0
        out = subprocess.run(command, env={**cluster.env, "RAY_ADDRESS": cluster.address}, cwd=home,
                             capture_output=True, text=True, timeout=600)
        t_done = time.monotonic() - timeline.t0
        assert out.returncode == 0, f"the run failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        # The run has ended and deleted its pools: the judge nodes go, back to min_workers (0).
        deadline = time.monotonic() + 60
        while cluster.judge_nodes() and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(1.5)  # the timeline sees it too

    # The pool asked for a second llm replica, and the autoscaler added a judge node for it ...
    t_ask = timeline.first(lambda s: s.target == 2)
    first_node = next(n for s in timeline.samples for n in s.replicas.values() if n)  # the first replica's
    elsewhere = {n for s in timeline.samples for n in s.replicas.values() if n not in (None, first_node)}
    assert t_ask is not None and len(elsewhere) == 1, f"asked at {t_ask}; llm replicas on other nodes: {elsewhere}"
    (new_node,) = elsewhere
    t_added = timeline.first(lambda s: new_node in s.judge_nodes)
    assert t_added >= t_ask
    # ... the second replica ran there and judged batches ...
    t_on = timeline.first(lambda s: new_node in s.replicas.values())
    on_new_node = {r for s in timeline.samples for r, n in s.replicas.items() if n == new_node}
    logs = next((cluster.root / "ray").glob("session_2*")) / "logs"
    batches = sum((logs / timeline.logs[r].lstrip("/")).read_text().count("CALL judge OK") for r in on_new_node)
    assert t_on is not None and batches > 0
    # ... and the autoscaler removed the node after the pool had shrunk off it.
    t_empty = timeline.first(lambda s: new_node not in s.replicas.values(), after=t_on)
    t_removed = timeline.first(lambda s: new_node not in s.judge_nodes, after=t_added)
    assert t_empty is not None and t_removed is not None and t_empty <= t_removed
    shrink = next(s for s in timeline.samples if s.t == t_empty)
    how = "Serve scaled the pool down to 1" if shrink.target else "the run ended and deleted the pool"
    assert cluster.judge_nodes() == set()  # the first judge node went too

    records = json.loads((run_dir / "metrics.json").read_text())
    assert [r["cycle"] for r in records] == [0, 1] and records[1]["training"]["steps"] > 0
    judged = [r for cycle in (0, 1)
              for r in pq.read_table(run_dir / "buffer" / "judgments" / f"cycle={cycle}").to_pylist()]
    llm = [(r["cycle"], r["stage"], r["prompt_id"], r["sample_index"]) for r in judged if r["judge"] == "llm"]
    assert len(llm) == len(set(llm)) == 2 * 16 * 4 + 16 * 8 == server.requests  # every answer once, none again
    print(f"run: {t_done - t_run:.1f} s. The pool asked for a second llm replica {t_ask - t_run:.1f} s in; the "
          f"autoscaler added judge node ...{new_node[-5:]} {t_added - t_ask:.1f} s later, the replica ran there "
          f"{t_on - t_added:.1f} s after that and judged {batches} batches; at {t_empty - t_run:.1f} s {how}, "
          f"and the autoscaler removed the node {t_removed - t_empty:.1f} s later")
