"""The embedded model: a tiny Llama that raylign builds, pretrains and caches itself.

`ensure_embedded_model()` returns a folder that `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load offline, building it on first use (about a minute on 2
cores). It supports:
- a cache at `$RAYLIGN_CACHE` (default `~/.cache/raylign`), one folder per recipe:
  `models/embedded-<hash>`, where the hash covers the `Recipe`, the source of this module, of
  `corpus.py`, `prompt_set.py` and `raylign/judging/rubrics.py` (the self-evaluation rubric), and the
  transformers and torch major.minor versions; a change to any of them builds a new model, and
  nothing else does;
- the same bytes from the same recipe on any machine of the same CPU kind, whatever its core
  count, load, OMP_NUM_THREADS or MKL_NUM_THREADS: the build runs on one torch thread and does
  nothing that depends on timing;
- atomic builds (a temporary sibling folder renamed into place, so a crashed build never
  looks finished) under a file lock (two processes never build the same model at once);
- a byte-level BPE tokenizer trained on the corpus, with `<pad>`, `<|user|>`,
  `<|assistant|>` and `<|end|>` (eos) and a chat template that TRL and `generate` both use;
- pretraining on `corpus.pretraining_corpus` (train prompts only, answers in three styles in
  equal numbers), with the loss on answer tokens only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import transformers
from filelock import FileLock

from raylign.judging import rubrics
from raylign.embedded import corpus, prompt_set, tones

USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<pad>"
SPECIAL_TOKENS = (PAD, USER, ASSISTANT, END)  # ids 0..3, in this order
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
RECIPE_FILE = "recipe.json"
# Torch threads for the whole build, whatever the environment or the caller says. Matmuls and
# reductions split their sums by thread count, so 1 and 2 threads train different weights (5 steps
# suffice); one thread also runs at full speed when another process shares the cores.
BUILD_THREADS = 1


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the built model; its JSON is part of the cache key."""

    vocab_size: int = 1280
    """BPE vocabulary, special tokens included (the 256 byte tokens are always in it)."""
    hidden_size: int = 128
    intermediate_size: int = 352
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 256
    prompt_seed: int = 0
    """Seed of `prompt_set.build_prompt_set`: which prompts the corpus is built from."""
    answers_per_style: int = 2
    """Corpus answers per train prompt and style."""
    verdicts_per_prompt: int = 1
    """Self-evaluation examples per train prompt (corpus.py): the `self` judge's rubric."""
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    """Linear warmup, then cosine decay to zero."""
    weight_decay: float = 0.01
    seed: int = 0
    """Seeds the corpus, the weight init and the batch order."""
    tones: bool = False
    """Answers also vary in tone, warm or curt, correlated with their style (tones.py): the
    world of configs/modpo.yaml, where empathy can pull against safety."""


DEFAULT_RECIPE = Recipe()
EMPATHY_RECIPE = Recipe(tones=True)
RECIPES = {"embedded": DEFAULT_RECIPE, "embedded-empathy": EMPATHY_RECIPE}
"""model.path names of the embedded models: built, not loaded."""


def default_cache_dir() -> pathlib.Path:
    return pathlib.Path(os.path.expanduser(os.environ.get("RAYLIGN_CACHE") or "~/.cache/raylign"))


def recipe_hash(recipe: Recipe) -> str:
    """Short sha256 of the recipe, the sources that build the model, and transformers' version."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dataclasses.asdict(recipe), sort_keys=True).encode())
    for module in (corpus, prompt_set, rubrics) + ((tones,) if recipe.tones else ()):
        digest.update(pathlib.Path(module.__file__).read_bytes())
    digest.update(pathlib.Path(__file__).read_bytes())  # how it trains, BUILD_THREADS included
    # Kernels change between versions, and with them the trained weights' last bits.
    for library in (transformers, torch):
        major_minor = ".".join(library.__version__.split(".")[:2])
        digest.update(f"{library.__name__}=={major_minor}".encode())
    return digest.hexdigest()[:12]


def embedded_model_dir(
    cache_dir: str | os.PathLike | None = None, recipe: Recipe = DEFAULT_RECIPE
) -> pathlib.Path:
    """Where the model of `recipe` lives (built or not)."""
    cache = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache / "models" / f"embedded-{recipe_hash(recipe)}"


def ensure_embedded_model(
    cache_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    recipe: Recipe = DEFAULT_RECIPE,
) -> pathlib.Path:
    """The folder of the embedded model, built first if the cache does not hold it."""
    folder = embedded_model_dir(cache_dir, recipe)
    # The folder appears only by an atomic rename of a finished build: existing means done.
    if (folder / RECIPE_FILE).exists():
        log(f"embedded model: cached at {folder}")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.with_name(f".{folder.name}.lock")):
        if (folder / RECIPE_FILE).exists():  # another process built it while we waited
            log(f"embedded model: cached at {folder}")
            return folder
        log(f"embedded model: building {folder.name} (first use, or a new recipe or source)")
        # Holding the lock, any temporary folder of this model is a killed build's leftover.
        for leftover in folder.parent.glob(f".{folder.name}.tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        try:
            _build(tmp, recipe, log)
            shutil.rmtree(folder, ignore_errors=True)  # not a finished build: no recipe.json
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"embedded model ready at {folder}")
    return folder


def _build(folder: pathlib.Path, recipe: Recipe, log: Callable[[str], None]) -> None:
    started = time.perf_counter()
    prompts = prompt_set.build_prompt_set(recipe.prompt_seed)
    build_corpus = tones.toned_corpus if recipe.tones else corpus.pretraining_corpus
    pairs = build_corpus(prompts, recipe.seed, recipe.answers_per_style, recipe.verdicts_per_prompt)
    tokenizer = _train_tokenizer(pairs, recipe)
    log(f"embedded model: corpus of {len(pairs)} answers, tokenizer of {len(tokenizer)} tokens "
        f"({time.perf_counter() - started:.1f}s)")

    previous_threads = torch.get_num_threads()  # callers keep theirs
    torch.set_num_threads(BUILD_THREADS)
    try:
        # vLLM's CPU worker turns torch.set_num_threads into a no-op in its process.
        if torch.get_num_threads() != BUILD_THREADS:
            raise RuntimeError(f"embedded model: torch stays at {torch.get_num_threads()} threads in this process "
                               f"and the build needs {BUILD_THREADS} to give the same weights everywhere; call "
                               "ensure_embedded_model before a vLLM engine starts in the process, or in another one")
        torch.manual_seed(recipe.seed)
        model = _new_model(tokenizer, recipe)
        num_params = sum(p.numel() for p in model.parameters())
        examples = _encode(tokenizer, pairs)
        final_loss = _pretrain(model, examples, tokenizer.pad_token_id, recipe, log)
    finally:
        torch.set_num_threads(previous_threads)

    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    seconds = time.perf_counter() - started
    record = {
        "recipe": dataclasses.asdict(recipe),
        "hash": recipe_hash(recipe),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "num_parameters": num_params,
        "final_loss": round(final_loss, 4),
        "build_seconds": round(seconds, 1),
    }
    (folder / RECIPE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log(f"embedded model: {num_params:,} parameters, loss {final_loss:.3f}, "
        f"built in {seconds:.1f}s")


def _train_tokenizer(pairs: list[tuple[str, str]], recipe: Recipe):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text stays encodable
        show_progress=False,
    )
    # Each distinct text once: the merges should follow the vocabulary, not answer repetition.
    texts = sorted({text for pair in pairs for text in pair})
    bpe.train_from_iterator(texts, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=END,
        pad_token=PAD,
        extra_special_tokens=[USER, ASSISTANT],
        model_max_length=recipe.max_positions,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _new_model(tokenizer, recipe: Recipe):
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_heads,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = transformers.LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def _encode(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per pair; the loss covers the prompt as well as the answer.

    Language-model pretraining on the prompt makes the model represent what was asked, harm
    cues included, the way a real pretrained model does. Trained on answers alone (with eight
    templates per style), a model fine-tuned on the ideal style per harm level reached a
    held-out Safety Score of 0.64; this recipe, 0.78 after the same 200 steps. Styles stay
    blind to harm.

    The chat template makes the prompt's text a prefix of the whole conversation's text and
    the prompt ends in a newline, so encoding the two parts apart gives the same ids as
    encoding the whole (checked in tests).
    """
    examples = []
    for prompt, answer in pairs:
        prompt_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        # The completion ends like the template's: answer, <|end|>, newline (what TRL scores).
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer + END + "\n", add_special_tokens=False)["input_ids"]
        examples.append((prompt_ids + answer_ids, prompt_ids + answer_ids))
    return examples


def _pretrain(model, examples, pad_id: int, recipe: Recipe, log: Callable[[str], None]) -> float:
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.learning_rate, betas=(0.9, 0.95),
        weight_decay=recipe.weight_decay,
    )

    def lr_factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        # Down to zero: with a 10% floor the last batches tilted the style mix (28/33/39%
        # on held-out prompts); decayed to zero it stays within 32-35% for each style.
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    batches = _batches([len(ids) for ids, _ in examples], recipe)
    model.train()
    started, recent = time.perf_counter(), []
    for step in range(recipe.steps):
        input_ids, labels, attention_mask = _collate([examples[i] for i in next(batches)], pad_id)
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        recent = (recent + [loss.item()])[-20:]
        if (step + 1) % 100 == 0 or step + 1 == recipe.steps:
            log(f"embedded model: step {step + 1}/{recipe.steps}, loss "
                f"{sum(recent) / len(recent):.3f} ({time.perf_counter() - started:.1f}s)")
    model.eval()
    return sum(recent) / len(recent)


def _batches(lengths: list[int], recipe: Recipe) -> Iterator[list[int]]:
    """Endless shuffled batches of similar lengths (less padding: about a third less compute)."""
    generator = torch.Generator().manual_seed(recipe.seed)
    pool = recipe.batch_size * 8
    while True:
        order = torch.randperm(len(lengths), generator=generator).tolist()
        batches = []
        for start in range(0, len(order) - recipe.batch_size + 1, pool):
            chunk = sorted(order[start : start + pool], key=lengths.__getitem__)
            batches += [chunk[i : i + recipe.batch_size]
                        for i in range(0, len(chunk) - recipe.batch_size + 1, recipe.batch_size)]
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[index]


def _collate(examples, pad_id: int):
    """Right-padded batch tensors; padding is masked out of attention and loss."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, answer_labels) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(answer_labels)
        attention_mask[row, : len(ids)] = 1
    return input_ids, labels, attention_mask
