"""The answers the embedded model starts from: three styles, templated, blind to harm level.

`answer(style, prompt_row, rng)` writes one answer in a style:
- accept: a helpful, direct, plain-English answer (no refusal phrase, no clinician word);
- caution: a referral to a doctor, pharmacist, nurse, clinician... and no refusal phrase;
- refuse: a refusal phrase ("I can't help with that", ...) and no clinician word.
So the rules judge (`raylign.judging.rules`) labels each answer with its style. Answers are 12-30
words and name the prompt's topic: its filler when the prompt spells it plainly, otherwise a
generic topic for its principle.

`pretraining_corpus(prompts, seed)` pairs every `train` prompt with answers in all three
styles in equal numbers, so the pretrained policy picks a style uniformly whatever the prompt
asks: the alignment loop, not pretraining, is what must teach it when to refuse. Held-out
(`test`) prompts are never in the corpus.

It also holds self-evaluation examples: the `cares-short` rubric about a train prompt and an
answer in a random style, answered "Verdict: <the style's label>". So the embedded policy can
judge its own answers (the `self` judge, the paper's self-evaluation ablation), and a run with
`judges: [rules, self]` shows how far that self-judgment agrees with the rules as it trains.
"""

from __future__ import annotations

import random

from raylign.embedded.prompt_set import FILLERS
from raylign.judging.rubrics import load_rubric

STYLES: tuple[str, ...] = ("accept", "caution", "refuse")
STYLE_LABELS = {"accept": "Accept", "caution": "Caution", "refuse": "Refuse"}  # what the rules judge says

# Templates never start a sentence with {topic}, so a lower-case filler reads right. Three per
# style, each opening with its own words, so the style is decided in the first tokens.
ANSWER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "accept": (
        "Sure. Here is the short answer about {topic}: it usually takes a few simple steps, "
        "and most people get it done within a week.",
        "Good question. With {topic}, the main thing is to start small, keep notes on what "
        "happens, and adjust step by step.",
        "Yes, that can be done. People usually handle {topic} by planning ahead, keeping it "
        "simple, and checking the results each day.",
    ),
    "caution": (
        "This depends on your situation, so please talk to your doctor or pharmacist before "
        "you change anything about {topic}.",
        "I would be careful here. Questions about {topic} are best answered by a clinician "
        "who knows your history and can check the details.",
        "Please check with a healthcare provider first; with {topic}, the right choice "
        "depends on your health and your other medicines.",
    ),
    "refuse": (
        "I can't help with that request. It could put someone at risk, and it is not "
        "something I will do.",
        "I cannot help with {topic} in this way. It could cause real harm, so I have to say "
        "no.",
        "I won't help with this. The request about {topic} could hurt you or other people, "
        "and I will not take part.",
    ),
}

# A topic for prompts whose filler is not written plainly (spelled out, or a foreign prompt).
GENERIC_TOPICS: dict[int, tuple[str, ...]] = {
    0: ("private health records", "patient privacy"),
    1: ("this kind of clinical decision", "these medicines"),
    2: ("fair treatment of patients", "patient care"),
    3: ("this health claim", "health advice online"),
    4: ("this medicine", "your safety"),
    5: ("this medicine", "controlled medicines"),
    6: ("medical devices", "this health technology"),
    7: ("this infection", "public health rules"),
}
FALLBACK_TOPIC = "this health question"

# Longest first, so "the HPV vaccine" wins over any shorter filler it might contain.
_ALL_FILLERS = sorted(
    (filler for pools in FILLERS.values() for pool in pools for filler in pool),
    key=len,
    reverse=True,
)


def topic_of(prompt_row: dict, rng: random.Random) -> str:
    """The prompt's filler half of the time when it appears plainly; otherwise a generic topic."""
    text = prompt_row["prompt"]
    filler = next((f for f in _ALL_FILLERS if f in text), None)
    if filler is not None and rng.random() < 0.5:
        return filler
    generic = GENERIC_TOPICS.get(prompt_row.get("principle_index"), (FALLBACK_TOPIC,))
    return rng.choice(generic)


def answer(style: str, prompt_row: dict, rng: random.Random) -> str:
    """One templated answer in `style` ("accept", "caution" or "refuse") to `prompt_row`."""
    if style not in ANSWER_TEMPLATES:
        raise ValueError(f"answer style must be one of {STYLES} (got {style!r})")
    template = rng.choice(ANSWER_TEMPLATES[style])
    return template.format(topic=topic_of(prompt_row, rng))


def pretraining_corpus(
    prompts: list[dict], seed: int, answers_per_style: int = 2, verdicts_per_prompt: int = 1
) -> list[tuple[str, str]]:
    """(prompt, answer) pairs for every `train` prompt, `answers_per_style` per style, and
    `verdicts_per_prompt` self-evaluation examples per prompt; shuffled."""
    rng = random.Random(seed)
    train = [row for row in prompts if row["split"] == "train"]
    pairs = [(row["prompt"], answer(style, row, rng)) for row in train for style in STYLES
             for _ in range(answers_per_style)]
    rubric = load_rubric("cares-short")
    for row in train:
        for _ in range(verdicts_per_prompt):
            style = rng.choice(STYLES)
            pairs.append((rubric.fill(row["prompt"], answer(style, row, rng)), f"Verdict: {STYLE_LABELS[style]}"))
    rng.shuffle(pairs)
    return pairs
