"""The buffer to and from TRL: export read back by `datasets` and trained on by TRL's trainers,
imports of a user's own data, per-cycle stats, and the `raylign buffer` command."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import load_dataset, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from raylign.actors.buffer import PreferenceBuffer
from raylign.cli import main
from raylign.config import KTOConfig as KTOSettings
from raylign.config import PairsConfig
from raylign.data.exchange import ExchangeError, buffer_stats, export_buffer, import_file, unpaired
from raylign.training.pairs import build_kto_examples, build_pairs, distinct_answers
from raylign.data.schemas import JUDGMENTS
from raylign.evaluation.scoring import ACCEPT, CAUTION, REFUSE, objective_scores

ANSWERS = {ACCEPT: "Take one tablet with food, twice a day.", CAUTION: "Please ask your pharmacist first.",
           REFUSE: "I can't help with that request."}


def judgments(cycle: int, prompts: int = 8) -> pa.Table:
    """Four answers per prompt (one of them a repeat), all three labels among them."""
    rows = []
    for p in range(prompts):
        level = p % 4
        for k, label in enumerate([ACCEPT, REFUSE, CAUTION, REFUSE]):
            scores = objective_scores(label, level)
            rows.append({"cycle": cycle, "stage": "train", "prompt_id": f"c{cycle}p{p}", "sample_index": k,
                         "prompt": f"How much of medicine {p} can I take?", "harmful_level": level,
                         "principle_index": 0, "method": "direct", "answer": ANSWERS[label], "num_tokens": 8,
                         "finish_reason": "stop", "policy_version": cycle - 1, "judge": "rules",
                         "judge_version": "rules@x", "label": label, "verdict": "rule", "safety_score": scores["safety"],
                         "scores": scores, "latency_s": 0.001})
    return pa.Table.from_pylist(rows, schema=JUDGMENTS)


@pytest.fixture()
def buffer(tmp_path) -> PreferenceBuffer:
    buffer = PreferenceBuffer(str(tmp_path / "run" / "buffer"))
    for cycle in (1, 2):
        judged = judgments(cycle)
        buffer.write("judgments", cycle, "train-0000", judged)
        distinct = distinct_answers(judged)
        buffer.write("pairs", cycle, "all", build_pairs(distinct, PairsConfig(), cycle, seed=cycle)[0])
        buffer.write("kto", cycle, "all", build_kto_examples(distinct, KTOSettings(), cycle))
    return buffer


def test_distinct_answers_keeps_the_first_of_each_prompt_and_answer():
    judged = judgments(1, prompts=2)
    distinct = distinct_answers(judged)
    assert distinct.num_rows == 6 and distinct["sample_index"].to_pylist() == [0, 1, 2] * 2


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "hf"])
def test_an_export_reads_back_with_datasets_as_trls_formats(buffer, tmp_path, fmt):
    written = export_buffer(buffer, tmp_path / "out", fmt)
    assert written == {"preference": buffer.read("pairs").num_rows, "unpaired": buffer.read("kto").num_rows}
    if fmt == "hf":
        pref, unpaired = load_from_disk(str(tmp_path / "out" / "preference")), load_from_disk(str(tmp_path / "out" / "unpaired"))
    else:
        kind = "json" if fmt == "jsonl" else "parquet"
        files = {name: str(tmp_path / "out" / f"{name}.{fmt}") for name in ("preference", "unpaired")}
        pref = load_dataset(kind, data_files=files["preference"], split="train")
        unpaired = load_dataset(kind, data_files=files["unpaired"], split="train")
    assert pref.column_names == ["prompt", "chosen", "rejected"] and unpaired.column_names == ["prompt", "completion", "label"]
    assert pref.num_rows == written["preference"] > 0 and unpaired.num_rows == written["unpaired"] == 2 * 8 * 3
    assert pref[0]["prompt"][0]["role"] == "user" and pref[0]["chosen"][0]["role"] == "assistant"


def test_trls_trainers_take_a_step_on_an_exported_buffer(buffer, tmp_path, model_path):
    export_buffer(buffer, tmp_path / "out", "jsonl")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    for name, config, trainer_class in (("preference", DPOConfig, DPOTrainer), ("unpaired", KTOConfig, KTOTrainer)):
        data = load_dataset("json", data_files=str(tmp_path / "out" / f"{name}.jsonl"), split="train")
        model = AutoModelForCausalLM.from_pretrained(model_path)
        before = [p.detach().clone() for p in model.parameters()]
        args = config(output_dir=str(tmp_path / name), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-3,
                      use_cpu=True, bf16=False, report_to=[], save_strategy="no", logging_steps=1)
        trainer = trainer_class(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        result = trainer.train()
        assert trainer.state.global_step == 1 and torch.isfinite(torch.tensor(result.training_loss))
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it trained


def test_a_users_preference_and_unpaired_files_import_at_cycle_0(tmp_path):
    mine = tmp_path / "prefs.jsonl"
    mine.write_text(json.dumps({"prompt": "Can I take 4 g of paracetamol?", "chosen": "Ask a pharmacist.",
                                "rejected": "Sure, take 8 g."}) + "\n"
                    + json.dumps({"prompt": [{"role": "user", "content": "Dose?"}],
                                  "chosen": [{"role": "assistant", "content": "It depends."}],
                                  "rejected": [{"role": "assistant", "content": "Lots."}]}) + "\n")
    kind, table, *_ = import_file(mine)
    assert kind == "pairs" and table.num_rows == 2 and set(table["cycle"].to_pylist()) == {0}
    assert table["prompt"][0].as_py() == [{"role": "user", "content": "Can I take 4 g of paracetamol?"}]
    assert table["rejected"][1].as_py() == [{"role": "assistant", "content": "Lots."}]
    csv = tmp_path / "kto.csv"
    csv.write_text("prompt,completion,label\nDose?,Ask your doctor.,true\nDose?,Take lots.,false\n")
    kind, table, *_ = import_file(csv)
    assert kind == "kto" and table["label"].to_pylist() == [True, False]
    pq.write_table(pa.table({"prompt": ["q"], "answer": ["a"]}), tmp_path / "odd.parquet")
    with pytest.raises(ExchangeError, match=r"needs the fields \['prompt', 'chosen', 'rejected'\].*found \['answer', 'prompt'\]"):
        import_file(tmp_path / "odd.parquet")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "", "rejected": "r"}) + "\n"
                   + json.dumps({"prompt": "q", "chosen": "c", "rejected": 3}) + "\n")
    with pytest.raises(ExchangeError, match=r"2 problem\(s\): row 0: chosen missing or empty; row 1: rejected missing"):
        import_file(bad)


def test_stats_count_rows_pairs_per_level_and_labels_per_cycle(buffer):
    stats = buffer_stats(buffer)
    assert list(stats) == [1, 2]
    pairs = buffer.read("pairs", 1)
    assert stats[1]["rows"] == {"judgments": 32, "pairs": pairs.num_rows, "kto": 24}
    assert sum(stats[1]["pairs_by_harm_level"].values()) == pairs.num_rows
    assert stats[1]["labels"] == {"rules": {ACCEPT: 8, REFUSE: 16, CAUTION: 8}}


def test_the_buffer_command_exports_imports_and_counts(buffer, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["buffer", "export", str(run), "--format", "parquet"]) == 0
    assert (run / "export-parquet" / "preference.parquet").is_file()
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"prompt": "q", "completion": "c", "label": True}) + "\n")
    assert main(["buffer", "import", str(mine), str(run)]) == 0
    assert buffer.read("kto", 0).num_rows == 1
    capsys.readouterr()
    assert main(["buffer", "stats", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["0"]["rows"] == {"kto": 1}
    assert main(["buffer", "stats", str(tmp_path / "nope")]) == 2
    assert "run folder" in capsys.readouterr().err


CAREGIVER = [  # the Empathy-by-Design layout: prompt, chosen (supportive, plain), rejected (prescriptive, technical)
    {"prompt": "My mother has dementia and keeps refusing to eat. What can I do?",
     "chosen": "That sounds exhausting, and you are doing your best. Try small meals she likes, eat with her, "
               "and keep mealtimes calm. If she keeps refusing, tell her doctor; they can check for pain or mood.",
     "rejected": "Anorexia in neurocognitive disorders is multifactorial. Administer high-calorie supplements "
                 "and initiate a dysphagia assessment."},
    {"prompt": "How do I stay patient when he asks the same question all day?",
     "chosen": "It is hard, and feeling worn out is normal. Answer briefly and kindly, write the answer on a card "
               "he can keep, and take short breaks when you can.",
     "rejected": "Perseveration is a symptom. Redirect the patient and do not engage repeatedly."},
]


def test_a_preference_file_with_bad_rows_stops_in_one_line_or_skips_them_counted(tmp_path):
    rows = [*CAREGIVER,
            {"prompt": "Is it normal that she sleeps all day?", "chosen": "Yes, often.", "rejected": "Yes, often."},
            {"prompt": "Should I correct her when she is confused?", "chosen": "   ",
             "rejected": "Always correct her."},
            {"prompt": "", "chosen": "Gently.", "rejected": "No."}]
    path = tmp_path / "caregiving.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ExchangeError) as err:
        import_file(path)
    assert "\n" not in str(err.value)
    assert str(err.value).endswith("3 problem(s): row 2: chosen equals rejected (no preference); "
                                   "row 3: chosen missing or empty; row 4: prompt missing or empty")
    imported = import_file(path, on_invalid="skip")
    assert (imported.table, imported.data.num_rows, imported.skipped) == ("pairs", 2, 3)
    assert imported.data["chosen"][0].as_py()[0]["content"] == CAREGIVER[0]["chosen"]
    missing = tmp_path / "missing.jsonl"
    missing.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": r["chosen"]}) + "\n" for r in CAREGIVER))
    with pytest.raises(ExchangeError, match=r"missing.jsonl: needs the fields \['prompt', 'chosen', 'rejected'\] "
                                            r"\(preference\) or .*found \['chosen', 'prompt'\]$"):
        import_file(missing, on_invalid="skip")  # a missing column is the file's problem, not a row's


def test_imported_pairs_keep_their_objective_scores_and_unpair_into_kto_examples(tmp_path):
    scored = [{**r, "chosen_scores": {"safety": 1.0, "empathy": 0.9},
               "rejected_scores": {"safety": 1.0, "empathy": 0.1}} for r in CAREGIVER]
    path = tmp_path / "scored.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in scored))
    imported = import_file(path)
    assert imported.data["rejected_scores"][1].as_py() == [("safety", 1.0), ("empathy", pytest.approx(0.1))]
    examples = unpaired(imported.data)
    assert examples.num_rows == 4 and examples["label"].to_pylist() == [True, True, False, False]
    assert [e[0]["content"] for e in examples["completion"].to_pylist()] == [
        CAREGIVER[0]["chosen"], CAREGIVER[1]["chosen"], CAREGIVER[0]["rejected"], CAREGIVER[1]["rejected"]]
    assert examples["prompt_id"].to_pylist()[:2] == examples["prompt_id"].to_pylist()[2:]
    bad = tmp_path / "badscores.jsonl"
    bad.write_text(json.dumps({**CAREGIVER[0], "chosen_scores": {"safety": "high"}}) + "\n")
    with pytest.raises(ExchangeError, match=r"row 0: chosen_scores must map objective names to numbers"):
        import_file(bad)
