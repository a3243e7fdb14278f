"""Helpers for tests and benchmarks.

- `LoopbackJudgeServer`, a stand-in for a remote judge model: an OpenAI-compatible chat
  endpoint on loopback, for the `llm` judge, which talks HTTP to a server it does not own. It
  answers /v1/chat/completions after a fixed delay (a latency-bound judge), with a verdict taken
  from the judged answer: the text after "VERDICT>" in it, else "Verdict: Accept"; or with what
  a `reply` function makes of the request. It keeps every request's body, can fail the first N
  requests (HTTP 500) and can require an API key. It binds 127.0.0.1 only.
- `kill_actor_process`: a crash for fault injection, SIGKILL to a live actor's process.
- `LoopbackS3`: an S3-compatible server (moto) on loopback, for run storage with no shared disk.
- `tiny_embedding_model`: a sentence-transformers model built from a config (a 1-layer BERT,
  mean pooling), for reference suites, since no model can be downloaded.
- `free_port` and `stop_process_trees`: for tests that start Ray nodes with `ray start`, each
  node stopped by its own process tree, never by `ray stop` (which stops every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pyarrow as pa

from raylign.data.schemas import ROLLOUTS


def verdict_in_answer(body: dict) -> str:
    """The default reply: the text after "VERDICT>" in the last message, else "Verdict: Accept"."""
    text = body["messages"][-1]["content"]
    return text.split("VERDICT>", 1)[1].split("\n</")[0] if "VERDICT>" in text else "Verdict: Accept"


class LoopbackJudgeServer:
    def __init__(self, delay_s: float = 0.0, fail_first: int = 0, api_key: str | None = None,
                 reply: Callable[[dict], str] = verdict_in_answer):
        """`reply`: the reply's text, from the request's body (model, messages, temperature, max_tokens)."""
        self.delay_s, self.fail_first, self.api_key, self.reply = delay_s, fail_first, api_key, reply
        self.requests = 0
        self.bodies: list[dict] = []  # every request's body, in arrival order
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests += 1
                    server.bodies.append(body)
                    failing = server.requests <= server.fail_first
                time.sleep(server.delay_s)
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "bad key"}})
                if failing:
                    return self._send(500, {"error": {"message": "overloaded"}})
                verdict = server.reply(body)
                self._send(200, {
                    "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": verdict}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "LoopbackJudgeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def answer_rows(n: int, verdict: str | None = None) -> pa.Table:
    """n ROLLOUTS rows; with `verdict`, each answer carries it for the loopback judge to return."""
    answer = "Take it with food." + (f" VERDICT>{verdict}" if verdict is not None else "")
    return pa.Table.from_pylist([
        {"cycle": 1, "stage": "eval", "prompt_id": f"p{i}", "sample_index": 0, "prompt": "Dose?",
         "harmful_level": 1, "principle_index": 0, "method": "direct", "answer": answer, "num_tokens": 5,
         "finish_reason": "stop", "policy_version": 0}
        for i in range(n)
    ], schema=ROLLOUTS)


def pool_throughput(pool, rows: pa.Table, batches: int) -> tuple[float, pa.Table]:
    """Rows/s of a JudgePool judging `rows` in `batches` batches, once every replica has judged
    one row (clients connected, imports done), and what it returned."""
    for _ in range(pool.cfg.replicas):  # one at a time per replica: each replica takes one
        pool.submit(rows.slice(0, 1))
    while pool.has_next():
        pool.poll(timeout_s=60)
    t0 = time.perf_counter()
    size = -(-rows.num_rows // batches)
    for start in range(0, rows.num_rows, size):
        pool.submit(rows.slice(start, size))
    judged = []
    while pool.has_next():
        judged.append(pool.poll(timeout_s=120).table)
    return rows.num_rows / (time.perf_counter() - t0), pa.concat_tables(judged)


def live_actors(class_name: str) -> list[dict]:
    """Ray's actor-table entries (pid, node, ...) of the live actors whose class name starts
    with `class_name` (`VLLMGenerator`, `PreferenceBuffer`, `Learner`, `ServeReplica:<app>`)."""
    from ray._private import state  # the actor table with pids; the public state API needs the dashboard

    return [a for a in state.actors().values() if a["State"] == "ALIVE" and a["ActorClassName"].startswith(class_name)]


def kill_actor_process(class_name: str) -> int:
    """SIGKILL the process of a live actor whose class name starts with `class_name`, on this
    machine, as a crash would; Ray sees an actor that died. Returns the pid killed."""
    alive = live_actors(class_name)
    if not alive:
        raise LookupError(f"no live actor of class {class_name}")
    pid = int(alive[0]["Pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_trees(*processes, grace_s: float = 15.0) -> list[int]:
    """Stop each of `processes` (psutil.Process or Popen objects, each started in a session of
    its own: `start_new_session=True`) and every process of its session or below it. SIGTERM to
    each (a `ray start --block` process then stops its own node's processes, as `ray stop` would,
    but only those); once they have exited (at most `grace_s`), SIGTERM and then SIGKILL to
    whatever they left, including processes started meanwhile (an autoscaler's nodes). Returns
    the pids still alive after that (none, normally)."""
    import psutil

    sessions = {root.pid for root in processes}

    def running(p) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def in_sessions(p) -> bool:
        try:
            return os.getsid(p.pid) in sessions
        except OSError:
            return False

    def left(known: list) -> list:
        return [p for p in {*known, *filter(in_sessions, psutil.process_iter())} if running(p)]

    tree = []
    for root in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            tree += [root, *root.children(recursive=True)]
            root.terminate()
    psutil.wait_procs(processes, timeout=grace_s)
    terminate, kill = psutil.Process.terminate, psutil.Process.kill
    for send, wait_s in [(terminate, 5.0), (kill, grace_s), (kill, grace_s)]:
        alive = left(tree)  # what the roots left behind, and processes started meanwhile
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                send(p)
        psutil.wait_procs(alive, timeout=wait_s)
    return [p.pid for p in left(tree)]


class LoopbackS3:
    """An S3-compatible server on loopback (moto's server mode, its own process) with one
    bucket: `uri(path)` is a storage URI in it, `env` the credentials every process that
    opens it needs (pyarrow reads them from the environment, as on a real cluster)."""

    env = {"AWS_ACCESS_KEY_ID": "raylign-test", "AWS_SECRET_ACCESS_KEY": "raylign-test",
           "AWS_DEFAULT_REGION": "us-east-1"}

    def __init__(self, bucket: str = "raylign"):
        self.bucket, self.port = bucket, free_port()

    def uri(self, path: str) -> str:
        return f"s3://{self.bucket}/{path}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def __enter__(self) -> "LoopbackS3":
        import shutil
        import subprocess
        import sys

        import pyarrow.fs as pafs

        server = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or "moto_server"
        self.process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fs = pafs.S3FileSystem(access_key=self.env["AWS_ACCESS_KEY_ID"], secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
                               region="us-east-1", scheme="http", endpoint_override=f"127.0.0.1:{self.port}",
                               allow_bucket_creation=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                fs.create_dir(self.bucket)
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    raise
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def tiny_embedding_model(folder: str | os.PathLike, texts: list[str], seed: int = 0) -> str:
    """A sentence-transformers model under `folder`, built from a config: a 1-layer BERT whose
    word-level vocabulary is the words of `texts`, with mean pooling; loads like any local model."""
    import re
    from pathlib import Path

    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    raw, out = Path(folder) / "bert", Path(folder) / "embedder"
    raw.mkdir(parents=True, exist_ok=True)
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    (raw / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(raw / "vocab.txt"))
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    SentenceTransformer(str(raw), device="cpu").save(str(out))  # a plain BERT folder gets mean pooling
    return str(out)
