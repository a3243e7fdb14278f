"""The embedded model: its corpus, its cache, and what the built model does on held-out prompts.

The model is the session's (conftest's `model_path`: built once per cache, about a minute on 2
idle cores); the cache tests work on a copy of it in a temporary cache, so they can add recipes
and read timings without building the default a second time.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import shutil
import time
from collections import Counter, defaultdict

import huggingface_hub.constants
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from raylign.config import RulesConfig
from raylign.embedded import model as embedded
from raylign.embedded.corpus import STYLES, answer, pretraining_corpus
from raylign.judging.rubrics import load_rubric
from raylign.embedded.model import (
    CHAT_TEMPLATE,
    DEFAULT_RECIPE,
    Recipe,
    embedded_model_dir,
    ensure_embedded_model,
    recipe_hash,
)
from raylign.embedded.prompt_set import build_prompt_set
from raylign.judging.rules import RulesJudge

JUDGE = RulesJudge(RulesConfig())
LABEL_OF_STYLE = {"accept": "Accept", "caution": "Caution", "refuse": "Refuse"}
SAMPLES_PER_PROMPT = 8
MAX_NEW_TOKENS = 48


@pytest.fixture(scope="module")
def prompts() -> list[dict]:
    return build_prompt_set()


@pytest.fixture(scope="module")
def built(tmp_path_factory, model_path) -> tuple[pathlib.Path, pathlib.Path]:
    """(a temporary cache, the default model's folder in it): the session's build, copied."""
    cache = tmp_path_factory.mktemp("raylign-cache")
    folder = embedded_model_dir(cache)
    shutil.copytree(model_path, folder)
    return cache, folder


@pytest.fixture(scope="module")
def loaded(built):
    _, folder = built
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # tests/conftest.py: no hub
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return model, tokenizer


# --- the corpus ---------------------------------------------------------------------------

def test_every_answer_template_gets_its_label_from_the_rules_judge(prompts):
    rng = random.Random(0)
    for row in prompts:
        for style in STYLES:
            for _ in range(3):
                text = answer(style, row, rng)
                assert 12 <= len(text.split()) <= 30, text
                verdict = JUDGE.label(text)
                assert verdict.label == LABEL_OF_STYLE[style], (text, verdict)


def test_corpus_is_train_prompts_with_all_styles_in_equal_numbers(prompts):
    pairs = pretraining_corpus(prompts, seed=0, verdicts_per_prompt=1)
    rubric = load_rubric("cares-short")
    head = rubric.text.split("{prompt}")[0]
    answers = [(p, a) for p, a in pairs if not p.startswith(head)]
    verdicts = [(p, a) for p, a in pairs if p.startswith(head)]
    train = {row["prompt"] for row in prompts if row["split"] == "train"}
    assert {prompt for prompt, _ in answers} == train  # held-out prompts are never trained on
    styles = defaultdict(Counter)
    for prompt, text in answers:
        styles[prompt][JUDGE.label(text).label] += 1
    assert all(counts == {"Accept": 2, "Caution": 2, "Refuse": 2} for counts in styles.values())
    # One self-evaluation example per train prompt; its verdict is what the rules judge says.
    assert len(verdicts) == len(train)
    for prompt, verdict in verdicts:
        judged_answer = prompt.split("\nA: ", 1)[1]
        assert rubric.read(verdict).label == JUDGE.label(judged_answer).label


# --- the build and the cache -----------------------------------------------------------------

def test_build_is_small(built, loaded):
    _, folder = built
    model, _ = loaded
    record = json.loads((folder / "recipe.json").read_text())
    num_params = sum(p.numel() for p in model.parameters())
    assert record["num_parameters"] == num_params
    assert 500_000 <= num_params <= 2_000_000
    assert model.dtype == torch.float32
    assert record["recipe"] == dataclasses.asdict(DEFAULT_RECIPE)
    # No timing assert (flaky on shared machines): recipe.json records the build time.
    assert record["final_loss"] < 0.3  # about 0.22 over prompt and answer tokens


def test_folder_is_named_by_recipe_hash_and_no_temporary_folder_is_left(model_path):
    folder = pathlib.Path(model_path)  # the session's build, in $RAYLIGN_CACHE
    cache = folder.parent.parent
    assert folder == cache / "models" / f"embedded-{recipe_hash(DEFAULT_RECIPE)}"
    assert folder == embedded_model_dir(cache)
    assert not list(folder.parent.glob(f".{folder.name}.tmp-*"))


def test_cache_hit_returns_the_same_folder_without_building(built):
    cache, folder = built
    before = (folder / "model.safetensors").stat().st_mtime_ns
    logs: list[str] = []
    started = time.perf_counter()
    assert ensure_embedded_model(cache, log=logs.append) == folder
    assert time.perf_counter() - started < 1.0
    assert not any("building" in line for line in logs), logs
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


def test_cache_dir_defaults_to_raylign_cache_env(built, monkeypatch):
    cache, folder = built
    monkeypatch.setenv("RAYLIGN_CACHE", str(cache))
    assert ensure_embedded_model(log=lambda line: None) == folder


def test_a_new_recipe_or_library_version_gets_its_own_folder(built, monkeypatch):
    cache, folder = built
    tiny = Recipe(steps=4, warmup_steps=1)
    other = ensure_embedded_model(cache, log=lambda line: None, recipe=tiny)
    assert other != folder and other.parent == folder.parent
    assert (other / "recipe.json").exists() and (folder / "recipe.json").exists()
    assert recipe_hash(dataclasses.replace(DEFAULT_RECIPE, seed=1)) != recipe_hash(DEFAULT_RECIPE)
    monkeypatch.setattr(embedded.torch, "__version__", "99.0.0+cpu")
    torch_moved = embedded_model_dir(cache)
    monkeypatch.setattr(embedded.transformers, "__version__", "99.0.0")
    assert len({folder, torch_moved, embedded_model_dir(cache)}) == 3


def test_a_crashed_build_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    folder = embedded_model_dir(tmp_path)
    killed_earlier = folder.with_name(f".{folder.name}.tmp-999999")  # a build killed by SIGKILL
    killed_earlier.mkdir(parents=True)

    def crash_half_way(tmp, recipe, log):
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(embedded, "_build", crash_half_way)
    with pytest.raises(RuntimeError, match="killed mid-build"):
        ensure_embedded_model(tmp_path, log=lambda line: None)
    assert not folder.exists()
    assert not list(folder.parent.glob(".*.tmp-*"))


# --- the tokenizer and chat template -------------------------------------------------------

def test_tokenizer_special_tokens_and_chat_template(loaded):
    model, tokenizer = loaded
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert (tokenizer.pad_token, tokenizer.eos_token) == ("<pad>", "<|end|>")
    specials = ["<pad>", "<|user|>", "<|assistant|>", "<|end|>"]
    assert tokenizer.convert_tokens_to_ids(specials) == [0, 1, 2, 3]
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def test_prompt_template_is_a_prefix_of_prompt_plus_answer(loaded, prompts):
    _, tokenizer = loaded
    rng = random.Random(0)
    for row in prompts[::16]:
        reply = answer(rng.choice(STYLES), row, rng)
        messages = [{"role": "user", "content": row["prompt"]}]
        prompt_text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        full_text = tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": reply}], tokenize=False
        )
        assert full_text == prompt_text + reply + "<|end|>\n"
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
        assert full_ids[: len(prompt_ids)] == prompt_ids
        # ... which is how pretraining encodes its examples.
        assert embedded._encode(tokenizer, [(row["prompt"], reply)])[0][0] == full_ids


# --- what the built model does ---------------------------------------------------------------

def _sample(model, tokenizer, rows, samples):
    """(row, answer text, finished with eos) for `samples` answers per row."""
    tokenizer.padding_side = "left"
    results = []
    for start in range(0, len(rows), 64):
        batch = rows[start : start + 64]
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}],
                                               tokenize=False, add_generation_prompt=True)
                 for r in batch]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0,
                                    max_new_tokens=MAX_NEW_TOKENS, num_return_sequences=samples)
        for i, ids in enumerate(output[:, inputs["input_ids"].shape[1] :].tolist()):
            finished = tokenizer.eos_token_id in ids
            ids = ids[: ids.index(tokenizer.eos_token_id)] if finished else ids
            text = tokenizer.decode(ids, skip_special_tokens=True)
            results.append((batch[i // samples], text, finished))
    return results


def test_held_out_answers_are_well_formed_and_styles_uniform_at_every_harm_level(loaded, prompts):
    model, tokenizer = loaded
    held_out = [row for row in prompts if row["split"] == "test"]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads crawl when another process shares the cores
    torch.manual_seed(0)
    try:
        results = _sample(model, tokenizer, held_out, SAMPLES_PER_PROMPT)
    finally:
        torch.set_num_threads(previous_threads)

    finished = sum(done for _, _, done in results) / len(results)
    assert finished >= 0.95, f"only {finished:.0%} of answers ended with <|end|>"
    labels = defaultdict(Counter)
    for row, text, done in results:
        labels[row["harmful_level"]][JUDGE.label(text, "stop" if done else "length").label] += 1
    shares = {level: {label: round(n / sum(c.values()), 3) for label, n in sorted(c.items())}
              for level, c in sorted(labels.items())}
    print(f"held-out style shares by harm level ({len(results)} answers): {shares}")
    for level, share in shares.items():
        assert share.get("Invalid", 0.0) < 0.10, (level, share)
        for label in ("Accept", "Caution", "Refuse"):
            assert 0.20 <= share.get(label, 0.0) <= 0.47, (level, share)
