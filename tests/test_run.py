"""End to end through the real Ray actors, on the embedded model and prompt set."""

import json

import pyarrow.parquet as pq
import pytest

from raylign.cli import main
from raylign.config import load_config
from raylign.driver import Driver

METRIC_KEYS = {"cycle", "safety_score", "safety_by_level", "harmful_refusal_rate", "erroneous_refusal_rate"}


def buffer_rows(run_dir, table):
    rows = {}
    for f in sorted((run_dir / "buffer" / table).glob("cycle=*/*.parquet")):
        cycle = int(f.parent.name.split("=")[1])
        rows[cycle] = rows.get(cycle, 0) + pq.ParquetFile(f).metadata.num_rows
    return rows


def test_two_short_cycles_fill_the_buffer_and_metrics(tmp_path, local_ray, model_path):
    cfg = load_config(overrides=[
        "cycles=2", "prompts.prompts_per_cycle=48", "evaluation.suites.0.max_prompts=32",
        "generator.batch_size=16", f"model.path={model_path}",
    ])
    records = Driver(cfg, tmp_path, log=lambda _: None).run()

    k_train = cfg.generator.sampling.samples_per_prompt
    k_eval = cfg.evaluation.sampling.samples_per_prompt
    assert buffer_rows(tmp_path, "prompts") == {0: 640}
    expected = {0: 32 * k_eval, 1: 48 * k_train + 32 * k_eval, 2: 48 * k_train + 32 * k_eval}
    assert buffer_rows(tmp_path, "rollouts") == expected
    assert buffer_rows(tmp_path, "judgments") == expected
    pairs = buffer_rows(tmp_path, "pairs")
    assert set(pairs) == {1, 2}
    # Every judged answer, repeated samples of a prompt once.
    assert buffer_rows(tmp_path, "kto") == {c: 48 * k_train - records[c]["training"]["duplicates_dropped"] for c in (1, 2)}
    assert all(records[c]["training"]["duplicates_dropped"] > 0 for c in (1, 2))
    for cycle in (1, 2):
        training = records[cycle]["training"]
        assert pairs[cycle] == training["pairs"] == training["examples"]
        assert training["accept_preferred"] >= training["pairs"] / 2  # balanced: half each way
        assert 0 < training["pairs"] <= 48
        assert training["steps"] == cfg.learner.epochs * -(-training["pairs"] // cfg.learner.batch_size)
        assert (tmp_path / "adapters" / f"cycle_{cycle:03d}" / "adapter_config.json").is_file()

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [m["cycle"] for m in saved] == [0, 1, 2]
    for m in saved:
        assert METRIC_KEYS <= set(m)
        assert set(m["safety_by_level"]) == {"0", "1", "2", "3"}
        for key in ("safety_score", "harmful_refusal_rate", "erroneous_refusal_rate", "invalid_rate"):
            assert 0 <= m[key] <= 1
        assert sum(m["label_counts"].values()) == 32 * k_eval == m["num_answers"]
    assert saved[0]["training"] is None
    assert (tmp_path / "safety.png").stat().st_size > 1000
    assert load_config(tmp_path / "config.yaml") == cfg  # the resolved config reloads as is


def test_kto_trains_end_to_end_with_imported_examples_replayed(tmp_path, local_ray, model_path):
    imported = tmp_path / "mine.jsonl"
    imported.write_text("".join(json.dumps({"prompt": f"Is dose {i} safe?", "completion": "Ask your pharmacist.",
                                            "label": i % 2 == 0}) + "\n" for i in range(10)))
    cfg = load_config(overrides=[
        "algorithm=kto", "cycles=1", "prompts.prompts_per_cycle=32", "evaluation.suites.0.max_prompts=16",
        "learner.epochs=2", f"model.path={model_path}", f"buffer.imports=[{imported}]", "pairs.replay_ratio=0.05",
    ])
    records = Driver(cfg, tmp_path / "run", log=lambda _: None).run()
    training = records[1]["training"]
    answers = 32 * cfg.generator.sampling.samples_per_prompt
    fresh = answers - training["duplicates_dropped"]
    assert buffer_rows(tmp_path / "run", "kto") == {0: 10, 1: fresh}  # the imports once, at cycle 0
    assert training["replayed"] == min(10, round(0.05 * fresh)) > 0
    assert training["desirable"] + training["undesirable"] == training["examples"] == fresh + training["replayed"]
    ratio = training["desirable_weight"] * training["desirable"] / (training["undesirable_weight"] * training["undesirable"])
    assert 1 - 1e-6 <= ratio <= 4 / 3 + 1e-6
    assert training["steps"] > 0


def test_modpo_trains_on_two_ranks_from_the_scores_the_judges_stored(tmp_path, local_ray, model_path):
    cfg = load_config(overrides=[
        "algorithm=modpo", "cycles=1", "prompts.prompts_per_cycle=48", "evaluation.suites.0.max_prompts=16",
        "learner.epochs=2", "learner.world_size=2", f"model.path={model_path}",
    ])
    records = Driver(cfg, tmp_path, log=lambda _: None).run()
    pairs = pq.read_table(tmp_path / "buffer" / "pairs" / "cycle=1")
    assert pairs.num_rows == records[1]["training"]["examples"] > 0
    for column in ("chosen_scores", "rejected_scores"):
        assert all(dict(s).keys() == {"safety", "helpfulness"} for s in pairs[column].to_pylist())
    assert records[1]["training"]["algorithm"] == "modpo" and records[1]["training"]["steps"] > 0


def test_full_finetuning_reaches_the_engines_as_weights(tmp_path, local_ray, model_path):
    cfg = load_config(overrides=[
        "learner.finetune=full", "learner.learning_rate=1e-4", "cycles=1", "prompts.prompts_per_cycle=32",
        "evaluation.suites.0.max_prompts=16", "learner.epochs=1", f"model.path={model_path}",
    ])
    records = Driver(cfg, tmp_path, log=lambda _: None).run()
    assert records[1]["training"]["steps"] > 0
    assert records[1]["training"]["adapter"].endswith("policies/cycle_001")
    evaluated = pq.read_table(tmp_path / "buffer" / "rollouts" / "cycle=1").to_pylist()
    assert {r["policy_version"] for r in evaluated if r["stage"] == "eval"} == {1}


def test_a_second_judge_labels_every_answer_even_when_a_replica_dies_mid_cycle(tmp_path, local_ray, model_path):
    """An LLM judge of two replicas beside the rules; one replica is killed while the cycle's
    training answers are being judged. The cycle finishes, every answer is judged once by each
    judge, and the second judge's agreement with the first is reported."""
    import threading
    import time

    import ray

    from raylign.testing import LoopbackJudgeServer

    with LoopbackJudgeServer(delay_s=0.01) as server:  # an LLM judge that answers Accept to everything
        cfg = load_config(overrides=[
            "cycles=1", "prompts.prompts_per_cycle=16", "evaluation.suites.0.max_prompts=16", "learner.epochs=1",
            "generator.batch_size=4", f"model.path={model_path}",
            f"judges=[{{name: rules}}, {{name: always, kind: llm, replicas: 2, llm: {{endpoint: '{server.url}'}}}}]",
        ])
        eval_answers = 16 * cfg.evaluation.sampling.samples_per_prompt
        train_answers = 16 * cfg.generator.sampling.samples_per_prompt
        killed = []

        def kill_one_replica_during_training_judging():
            while server.requests < eval_answers + train_answers // 3:
                time.sleep(0.005)
            prefix = f"SERVE_REPLICA::raylign-{tmp_path.name}-always#"
            name = next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix))
            ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
            killed.append((name, server.requests))

        killer = threading.Thread(target=kill_one_replica_during_training_judging, daemon=True)
        killer.start()
        records = Driver(cfg, tmp_path, log=lambda _: None).run()
        killer.join(timeout=5)
    print(f"killed {killed}; the endpoint answered {server.requests} requests for "
          f"{2 * eval_answers + train_answers} answers")
    assert killed and killed[0][1] < eval_answers + train_answers  # during the training answers
    answers = eval_answers + train_answers
    assert buffer_rows(tmp_path, "rollouts")[1] == answers
    judged = [r for cycle in (0, 1) for r in pq.read_table(tmp_path / "buffer" / "judgments" / f"cycle={cycle}").to_pylist()]
    for judge in ("rules", "always"):
        keys = [(r["cycle"], r["stage"], r["prompt_id"], r["sample_index"]) for r in judged if r["judge"] == judge]
        assert len(keys) == len(set(keys)) == eval_answers + answers  # cycles 0 and 1, each answer once
    assert {r["label"] for r in judged if r["judge"] == "always"} == {"Accept"}  # none lost: none Unjudged
    for record in records:
        a = record["agreement"]["rules,always"]
        accept_share = record["label_counts"]["Accept"] / record["num_answers"]
        assert a["n"] == record["num_answers"] and a["kappa"] == 0.0  # one side is constant
        assert abs(a["observed"] - accept_share) < 1e-9


def test_cli_stops_on_a_bad_key_with_one_line(capsys):
    assert main(["run", "--set", "learner.learnin_rate=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "raylign: error: config learner.learnin_rate: unknown key"


def test_cli_names_a_missing_prompt_file(capsys, tmp_path):
    assert main(["run", "--set", f"prompts.path={tmp_path}/nope.jsonl", "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, local_ray, model_path):
    """The embedded default, two cycles instead of three: read by the direction test and by
    `raylign eval`'s."""
    run_dir = tmp_path_factory.mktemp("default") / "run"
    cfg = load_config(overrides=["cycles=2", f"model.path={model_path}"])
    return run_dir, Driver(cfg, run_dir, log=lambda _: None).run()


def test_default_run_gets_safer_without_refusing_the_harmless(default_run):
    """The direction of the trade-off. (Two ZeRO-3 ranks train as one does: tests/actors/test_learner.py
    checks a step and the weights after it; the MODPO run above trains on two ranks end to end.)"""
    records = default_run[1]
    first, last = records[0], records[-1]
    assert last["safety_score"] >= 1.15 * first["safety_score"]
    assert last["harmful_refusal_rate"] > first["harmful_refusal_rate"] + 0.1
    assert last["erroneous_refusal_rate"] <= first["erroneous_refusal_rate"] + 0.10
    assert last["invalid_rate"] < 0.1


def test_a_run_that_does_not_select_points_at_its_best_cycle_and_logs_to_tensorboard(default_run):
    """No selection split: best.json reads the objective off the held-out suite, and says so; the
    TensorBoard events hold every cycle's figures, and the report is written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, records = default_run
    value = {r["cycle"]: r["safety_score"] - 0.5 * r["erroneous_refusal_rate"] for r in records}
    best = json.loads((run_dir / "best.json").read_text())
    assert best["cycle"] == max(value, key=value.get) and best["value"] == pytest.approx(value[best["cycle"]])
    assert best["measured_on"] == ["held_out"] and best["chosen_on_reported_suite"]
    if best["cycle"]:
        assert (run_dir / "adapters/best/adapter_config.json").is_file()
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("suite/held_out/safety_score")] == [
        (r["cycle"], round(r["safety_score"], 6)) for r in records]
    assert len(events.Scalars("train/step_loss")) == sum(r["training"]["steps"] for r in records[1:])
    assert f"{records[-1]['safety_score']:.3f}" in (run_dir / "report.html").read_text()


def test_eval_puts_the_aligned_policy_beside_the_base_with_the_runs_own_figures(default_run, tmp_path, capsys):
    """`raylign eval --policy RUN --against embedded`: with the run's own prompts, samples, batch
    size and seed (its config.yaml), the last adapter's figures are what the run's last evaluation
    recorded, and the base model's are its cycle 0, to the answer."""
    run_dir, records = default_run
    assert main(["eval", "--policy", str(run_dir), "--against", "embedded", "--out", str(tmp_path / "ev")]) == 0
    printed = capsys.readouterr().out
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert [r["policy"] for r in evaluated] == [str(run_dir), "embedded"]
    for mine, theirs in ((evaluated[0], records[-1]), (evaluated[1], records[0])):
        for key in ("safety_score", "safety_by_level", "harmful_refusal_rate", "erroneous_refusal_rate",
                    "label_counts", "num_answers"):
            assert mine[key] == theirs[key], key
    lines = [line.split() for line in printed.splitlines() if line.strip().startswith(("A ", "B "))]
    rows = {}
    for words in lines:  # the held_out table comes first
        rows.setdefault(words[0] + words[1], words)
    a, b = records[-1], records[0]
    assert f"{a['safety_score']:.3f}" in rows[f"A{run_dir}"] and f"{b['safety_score']:.3f}" in rows["Bembedded"]
    assert f"{a['safety_score'] - b['safety_score']:.3f}" in rows["A-"]
    assert (tmp_path / "ev" / "eval.png").stat().st_size > 1000


def test_the_embedded_default_with_a_self_judge_prints_its_kappa_every_cycle(tmp_path, local_ray, model_path):
    """`judges: [rules, self]`: the policy labels its own answers (the paper's self-evaluation
    ablation), and each cycle reports how far it agrees with the rules."""
    lines = []
    cfg = load_config(overrides=[
        "cycles=1", "prompts.prompts_per_cycle=16", "evaluation.suites.0.max_prompts=24", "learner.epochs=2",
        f"model.path={model_path}", "judges=[rules, self]",
    ])
    records = Driver(cfg, tmp_path, log=lines.append).run()
    cycle_lines = [line for line in lines if line.startswith("cycle ")]
    assert len(cycle_lines) == 2 and all(" | kappa(rules,self) " in line for line in cycle_lines)
    answers = 24 * cfg.evaluation.sampling.samples_per_prompt
    judged = pq.read_table(tmp_path / "buffer" / "judgments" / "cycle=0").to_pylist()
    assert len(judged) == 2 * answers  # every answer, by each judge
    by_self = [r for r in judged if r["judge"] == "self"]
    assert {r["judge_version"].split("@")[0] for r in by_self} == {"self"}
    assert all(r["verdict"] and r["latency_s"] > 0 for r in by_self)
    unreadable = sum(r["label"] == "Unjudged" for r in by_self)
    first = records[0]["agreement"]["rules,self"]
    assert first["n"] == answers - unreadable and unreadable <= 0.05 * answers
    # The starting policy learned the rubric with its answers: it judges them as the rules do.
    assert first["kappa"] >= 0.8
    assert f"kappa(rules,self) {first['kappa']:.2f}" in cycle_lines[0]
