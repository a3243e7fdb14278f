"""raylign submitted as a job to a Ray cluster started the way an operator starts one.

Four nodes on this machine, each a `ray start --block` process of its own: a head
(`--dashboard-host=127.0.0.1`, so the dashboard and the job server answer on loopback only) and
`ray start --address=127.0.0.1:PORT` nodes, each carrying its role's custom resource as
cluster.yaml's node types do: head {buffer}, generator {generator}, judge {judge}, learner
{learner}. Ray's token authentication stays on, with a token of the test's own
(RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH: how the nodes and the CLI find it). Each node has its
own environment: RAYLIGN_CACHE, a RAYLIGN_SCRATCH folder of its own, and on the judge node only
an API key. One run, `ray job submit --working-dir . -- raylign run configs/cluster-cpu.yaml`
(one cycle, a rules judge and an `llm` judge whose endpoint requires that key), proves:

- the job server (the dashboard) listens on 127.0.0.1 only, and refuses a client without the
  token (401) or with another one (403);
- the job SUCCEEDED, and metrics.json has cycles 0 and 1 with training steps;
- each role ran on the node that carries its resource, by the run's own record (`nodes` in
  state.json and in each metrics.json record) and by Ray's actor table;
- the key reached the judge replicas (every request to the endpoint was authorised) and is
  written nowhere: not in the run folder, the job's logs, the job's info and runtime env, nor
  any file of the nodes' Ray folders (session logs included);
- stopping each node's own process tree leaves nothing of the cluster running.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import psutil
import pyarrow.parquet as pq
import pytest

from raylign.testing import LoopbackJudgeServer, free_port, stop_process_trees, verdict_in_answer

ROOT = Path(__file__).parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
KEY_ENV = "RAYLIGN_TEST_JUDGE_KEY"
# Node: (custom resources, logical CPUs). CPUs are logical: 5 on a 2-core machine is fine.
NODES = {
    "head": ({"buffer": 1}, 1),  # the job's driver and the buffer (0.5 CPU)
    "generator": ({"generator": 1}, 1),  # one vLLM engine (1 CPU)
    "judge": ({"judge": 1}, 2),  # a rules replica (1 CPU) and an llm replica (0.25 CPU), judge 0.5 each
    "learner": ({"learner": 1}, 1),  # one rank (1 CPU)
}
ROLE_NODE = {"generator": "generator", "learner": "learner", "buffer": "head", "judge.rules": "judge",
             "judge.llm": "judge"}
UPLOAD_EXCLUDES = [".venv", ".venv-ci", ".git", "runs", ".cache-ci", ".hypothesis", ".pytest_cache", "__pycache__",
                   "*.egg-info"]


def role_of(class_name: str) -> str | None:
    """The raylign role of an actor, by its class name (a judge replica's: ServeReplica:APP:JUDGE)."""
    if class_name.startswith("ServeReplica:"):
        return f"judge.{class_name.rsplit(':', 1)[1]}"
    return {"VLLMGenerator": "generator", "Learner": "learner", "PreferenceBuffer": "buffer"}.get(class_name)


class Node(NamedTuple):
    process: psutil.Popen  # `ray start --block`: the node's processes are its tree and its session
    temp_dir: Path
    node_id: str
    address: str


class Cluster(NamedTuple):
    root: Path
    dashboard: str  # http://127.0.0.1:PORT, the job server
    env: dict[str, str]  # what the CLI needs to reach it: the auth mode and token path
    secret: str  # the judge's API key, in the judge node's environment only
    nodes: dict[str, Node]

    def ray(self, *args: str, timeout: float = 60) -> str:
        out = subprocess.run([RAY, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"ray {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def ray_json(self, *args: str):
        return json.loads(self.ray(*args, "--address", self.dashboard, "--format", "json"))

    def stop(self) -> list[int]:
        """Stop every node by its own process tree; the pids of that tree still alive after."""
        return stop_process_trees(*(node.process for node in self.nodes.values()))


def start_node(name: str, root: Path, env: dict[str, str], *args: str) -> psutil.Popen:
    """`ray start --block` for node `name`: its resources and CPUs, a Ray folder of its own (its
    session logs are its own) and a scratch folder of its own."""
    resources, cpus = NODES[name]
    temp_dir = root / name
    (temp_dir / "scratch").mkdir(parents=True)
    command = [RAY, "start", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
               f"--temp-dir={temp_dir}", f"--num-cpus={cpus}", f"--resources={json.dumps(resources)}",
               "--object-store-memory=268435456", f"--dashboard-agent-listen-port={free_port()}", *args]
    # A session of its own, so that stopping the node can find all of it (stop_process_trees).
    return psutil.Popen(command, env={**env, "RAYLIGN_SCRATCH": str(temp_dir / "scratch")},
                        stdout=open(root / f"{name}.out", "w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(path: Path, process: psutil.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, f"{process.args[2:]} exited with {process.returncode}"
        assert time.monotonic() < deadline, f"no {path} after {timeout_s} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster():
    # Short paths: Ray's Unix sockets live under the temp dir, and socket paths have a 107-byte limit.
    root = Path(tempfile.mkdtemp(prefix="rl-job-"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    secret = f"sk-test-{secrets.token_hex(16)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != KEY_ENV}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    gcs, dashboard = free_port(), free_port()
    processes: dict[str, psutil.Popen] = {}
    t0 = time.monotonic()
    try:
        processes["head"] = start_node("head", root, env, "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                                       f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}")
        wait_for(root / "head" / "ray_current_cluster", processes["head"], 120)
        for name in ("generator", "judge", "learner"):
            node_env = {**env, KEY_ENV: secret} if name == "judge" else env  # the key: on the judge node only
            processes[name] = start_node(name, root, node_env, f"--address=127.0.0.1:{gcs}")
        for name in ("generator", "judge", "learner"):
            wait_for(root / name / "ray_current_cluster", processes[name], 120)
        cli = Cluster(root, f"http://127.0.0.1:{dashboard}", env, secret, {})
        listed = []
        for _ in range(60):
            listed = [n for n in cli.ray_json("list", "nodes") if n["state"] == "ALIVE"]
            if len(listed) == len(NODES):
                break
            time.sleep(1)
        nodes = {}
        for name, (resources, _) in NODES.items():
            (entry,) = [n for n in listed if set(resources) <= set(n["resources_total"])]
            nodes[name] = Node(processes[name], root / name, entry["node_id"], entry["node_ip"])
        print(f"cluster of {len(nodes)} nodes up in {time.monotonic() - t0:.1f} s")
        cluster = cli._replace(nodes=nodes)
        yield cluster
    finally:
        stop_process_trees(*processes.values())
        shutil.rmtree(root, ignore_errors=True)


class Submitted(NamedTuple):
    job_id: str
    run_dir: Path
    seconds: float
    requests: int  # requests the judge endpoint got
    authorised: int  # of them, with the key (only those reach `reply`)
    output: str  # what `ray job submit` printed: the job's logs as they came


@pytest.fixture(scope="module")
def submitted(cluster, model_path, tmp_path_factory):
    """One run of configs/cluster-cpu.yaml, submitted as a job: one cycle, 16 prompts, a rules
    judge and an llm judge on the judge node."""
    run_dir = tmp_path_factory.mktemp("job") / "run"
    authorised = []

    def reply(body):  # called only for requests that carried the key
        authorised.append(1)
        return verdict_in_answer(body)

    job_id = f"raylign-test-{secrets.token_hex(4)}"
    with LoopbackJudgeServer(api_key=cluster.secret, reply=reply) as server:
        judges = ("[{name: rules, kind: rules, replicas: 1, num_cpus: 1, resources: {judge: 0.5}}, "
                  f"{{name: llm, kind: llm, replicas: 1, resources: {{judge: 0.5}}, "
                  f"llm: {{endpoint: '{server.url}', api_key_env: {KEY_ENV}}}}}]")
        overrides = ["cycles=1", "prompts.prompts_per_cycle=16", "evaluation.suites.0.max_prompts=16",
                     "learner.epochs=1", "generator.batch_size=8", f"model.path={model_path}", f"judges={judges}"]
        command = [RAY, "job", "submit", "--address", cluster.dashboard, "--submission-id", job_id,
                   "--working-dir", ".", "--runtime-env-json", json.dumps({"excludes": UPLOAD_EXCLUDES}), "--",
                   "raylign", "run", "configs/cluster-cpu.yaml", *[a for o in overrides for a in ("--set", o)],
                   "--out", str(run_dir)]
        t0 = time.monotonic()
        out = subprocess.run(command, env=cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        seconds = time.monotonic() - t0
    print(f"ray job submit -> finished: {seconds:.1f} s ({'ok' if out.returncode == 0 else out.returncode})")
    assert out.returncode == 0, f"ray job submit failed:\n{out.stdout[-6000:]}\n{out.stderr[-3000:]}"
    return Submitted(job_id, run_dir, seconds, server.requests, len(authorised), out.stdout + out.stderr)


def test_the_job_server_listens_on_loopback_only_and_asks_for_the_token(cluster):
    port = int(cluster.dashboard.rsplit(":", 1)[1])
    head = cluster.nodes["head"].process
    listening = {c.laddr.ip for p in head.children(recursive=True) for c in p.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert listening == {"127.0.0.1"}

    def status(token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{cluster.dashboard}/api/jobs/", headers=headers)) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    token = Path(cluster.env["RAY_AUTH_TOKEN_PATH"]).read_text()
    assert (status(None), status(secrets.token_hex(32)), status(token)) == (401, 403, 200)


def test_the_job_runs_one_cycle_with_each_role_on_its_node(cluster, submitted):
    (job,) = [j for j in cluster.ray_json("list", "jobs", "--detail") if j["submission_id"] == submitted.job_id]
    assert job["status"] == "SUCCEEDED"

    records = json.loads((submitted.run_dir / "metrics.json").read_text())
    assert [r["cycle"] for r in records] == [0, 1]
    assert records[1]["training"]["steps"] > 0

    # Where Ray says each role's actors ran (the actors are gone now; the table keeps them).
    ran_on: dict[str, set[str]] = {}
    for actor in cluster.ray_json("list", "actors", "--detail", "--limit", "10000"):
        if role := role_of(actor["class_name"]):
            ran_on.setdefault(role, set()).add(actor["node_id"])
    assert ran_on == {role: {cluster.nodes[node].node_id} for role, node in ROLE_NODE.items()}

    # Where the run says they ran: state.json, and each cycle's record.
    state = json.loads((submitted.run_dir / "state.json").read_text())
    for where in [state["nodes"], *[r["nodes"] for r in records]]:
        assert set(where) == set(ROLE_NODE)
        for role, node in ROLE_NODE.items():
            assert where[role], f"{role}: no node recorded"
            assert all(n == {"node_id": cluster.nodes[node].node_id, "address": cluster.nodes[node].address}
                       for n in where[role]), f"{role} should run on the {node} node: {where[role]}"


def test_the_judge_key_reaches_the_replicas_and_is_written_nowhere(cluster, submitted):
    judged = [r for cycle in (0, 1)
              for r in pq.read_table(submitted.run_dir / "buffer" / "judgments" / f"cycle={cycle}").to_pylist()]
    llm = [r for r in judged if r["judge"] == "llm"]
    answers = 2 * 16 * 4 + 16 * 8  # two evaluations of 16 prompts x 4 samples, 16 training prompts x 8
    assert len(llm) == answers and {r["label"] for r in llm} == {"Accept"}  # none Unjudged
    assert submitted.requests == submitted.authorised == answers  # each request carried the key, once

    key = cluster.secret.encode()
    assert KEY_ENV not in cluster.env and KEY_ENV not in os.environ  # the submitting side never has it
    where = {
        "the job's submit output": submitted.output,
        "the job's logs": cluster.ray("job", "logs", "--address", cluster.dashboard, submitted.job_id),
        "the job's status": cluster.ray("job", "status", "--address", cluster.dashboard, submitted.job_id),
        "the job's info and runtime env": cluster.ray("list", "jobs", "--detail", "--address", cluster.dashboard,
                                                       "--format", "json"),
    }
    assert submitted.job_id in where["the job's info and runtime env"]  # the search looks at the right job
    found = [name for name, text in where.items() if key in text.encode()]
    files = [f for folder in (submitted.run_dir, cluster.root) for f in folder.rglob("*")
             if f.is_file() and not f.is_symlink()]
    # What is searched: the run folder, and every node's Ray folder (session logs, the uploaded
    # working dir, runtime envs) with its `ray start` output.
    assert all(list(n.temp_dir.glob("session_*/logs/raylet.out")) for n in cluster.nodes.values())
    found += [str(f) for f in files if key in f.read_bytes()]
    print(f"searched {len(files)} files and the job's logs, status and info for the key: found in {found}")
    assert found == []


def test_every_node_stops_with_its_own_process_tree(cluster):
    pids = {p.pid for n in cluster.nodes.values() for p in [n.process, *n.process.children(recursive=True)]}
    assert len(pids) > 4 * 3  # each node: ray start, raylet, its agents (and workers, if any are left)
    assert cluster.stop() == []

    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    left = [pid for pid in pids if running(pid)]
    named = [p.pid for p in psutil.process_iter(["cmdline"]) if str(cluster.root) in " ".join(p.info["cmdline"] or [])]
    assert left == [] and named == []
