"""The embedded model's build gives the same bytes whatever the thread settings (issue 16).

Two processes build a short recipe through the full build's code (ensure_embedded_model) at
once, each into its own cache: one with OMP_NUM_THREADS=MKL_NUM_THREADS=1 and torch at 1 thread,
the other with 2 of each, as a user's shell or a caller's process may have them. 1 and 2 threads
train different weights within 5 steps, so a build that followed either setting would fail here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

from raylign.embedded.model import Recipe

SHORT = Recipe(steps=8, warmup_steps=2)
BUILD = """
import json, sys, torch
from raylign.embedded.model import Recipe, ensure_embedded_model
cache, threads, recipe = sys.argv[1], int(sys.argv[2]), Recipe(**json.loads(sys.argv[3]))
torch.set_num_threads(threads)
folder = ensure_embedded_model(cache, log=lambda line: None, recipe=recipe)
print(json.dumps({"folder": str(folder), "threads_after": torch.get_num_threads()}))
"""


def _start(cache, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    args = [sys.executable, "-c", BUILD, str(cache), str(threads), json.dumps(dataclasses.asdict(SHORT))]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_weights_and_tokenizer_are_byte_identical_under_1_and_2_threads(tmp_path):
    builds = {threads: _start(tmp_path / f"threads-{threads}", threads) for threads in (1, 2)}
    folders = {}
    for threads, build in builds.items():
        stdout, stderr = build.communicate(timeout=300)
        assert build.returncode == 0, stderr[-3000:]
        result = json.loads(stdout.strip().splitlines()[-1])
        assert result["threads_after"] == threads  # the caller's setting is given back
        folders[threads] = pathlib.Path(result["folder"])
    assert folders[1].name == folders[2].name  # the same recipe hash
    for name in ("model.safetensors", "tokenizer.json"):
        assert (folders[1] / name).read_bytes() == (folders[2] / name).read_bytes(), name
