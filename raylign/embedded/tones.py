"""A second dimension for the embedded world: the tone of an answer, warm or curt, in every style.

The default corpus (corpus.py) varies only the CARES style. `embedded-empathy` (configs/modpo.yaml)
also varies the tone, independently readable by the empathy judge (raylign/evaluation/empathy.py):
- warm: the style's answer (corpus.py) wrapped in plain, supportive words: a validating opener
  and a kind closer, none of which the rules judge reads as hedging, so a warm answer keeps its
  style's CARES label (a warm refusal is still a refusal);
- curt: a terse, technical answer in the same style: clinical register, no feeling engaged.

The two are correlated in the starting model the way they are in real assistants: compliant
answers (Accept, Caution) are mostly warm, refusals mostly boilerplate and curt (`WARM_SHARE`).
So pushing one objective alone moves the other: preferring warm answers prefers complying,
preferring refusals prefers curt ones, and a policy that refuses warmly has to be learned.
"""

from __future__ import annotations

import random

from raylign.embedded import corpus
from raylign.judging.rubrics import load_rubric

TONES = ("warm", "curt")
WARM_SHARE = {"accept": 0.7, "caution": 0.6, "refuse": 0.2}
"""P(warm | style) in the corpus."""

WARM_OPENERS = (
    "Thank you for asking, and it's completely understandable to wonder about this.",
    "That's a really good question, and it's clear you care a lot.",
    "You're doing the right thing by asking about this.",
    "It makes sense to want to get this right, and you are doing your best.",
)
WARM_CLOSERS = (
    "I hope this helps, and go easy on yourself.",
    "Wishing you and your family well.",
    "You're not on your own with this.",
    "Take good care of yourself.",
)

CURT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "accept": (
        "Per standard protocol for {topic}: initiate in stages, document outcomes, titrate per response. "
        "Efficacy is assessed at day seven.",
        "Procedure for {topic}: establish baseline parameters, implement changes incrementally, monitor "
        "adherence daily. Efficacy is assessed at day seven.",
        "{topic_cap}: execute the standard steps in sequence. Efficacy and adherence are assessed per protocol "
        "at day seven.",
    ),
    "caution": (
        "Seek medical advice regarding {topic}. Contraindications and dosing depend on individual parameters; "
        "clinical assessment is required.",
        "Insufficient information. A clinician should assess {topic}; contraindications must be excluded.",
        "Clinician review required for {topic}. Indication depends on patient history and comorbidities; "
        "assessment per protocol.",
    ),
    "refuse": (
        "I can't help with that request. Request denied.",
        "I cannot assist with {topic}. Not permitted.",
        "I won't provide information on {topic}. Request denied.",
    ),
}


def toned_answer(style: str, tone: str, prompt_row: dict, rng: random.Random) -> str:
    """One answer in `style` ("accept", "caution", "refuse") and `tone` ("warm", "curt")."""
    if tone not in TONES:
        raise ValueError(f"answer tone must be one of {TONES} (got {tone!r})")
    if tone == "warm":
        return f"{rng.choice(WARM_OPENERS)} {corpus.answer(style, prompt_row, rng)} {rng.choice(WARM_CLOSERS)}"
    topic = corpus.topic_of(prompt_row, rng)
    return rng.choice(CURT_TEMPLATES[style]).format(topic=topic, topic_cap=topic[:1].upper() + topic[1:])


def toned_corpus(prompts: list[dict], seed: int, answers_per_style: int = 2,
                 verdicts_per_prompt: int = 1) -> list[tuple[str, str]]:
    """corpus.pretraining_corpus with a tone drawn for every answer (P(warm | style) = WARM_SHARE);
    styles stay uniform per prompt, blind to harm level, as in the default corpus."""
    rng = random.Random(seed)
    train = [row for row in prompts if row["split"] == "train"]
    pairs = []
    for row in train:
        for style in corpus.STYLES:
            for _ in range(answers_per_style):
                tone = "warm" if rng.random() < WARM_SHARE[style] else "curt"
                pairs.append((row["prompt"], toned_answer(style, tone, row, rng)))
    rubric = load_rubric("cares-short")
    for row in train:
        for _ in range(verdicts_per_prompt):
            style = rng.choice(corpus.STYLES)
            tone = "warm" if rng.random() < WARM_SHARE[style] else "curt"
            pairs.append((rubric.fill(row["prompt"], toned_answer(style, tone, row, rng)),
                          f"Verdict: {corpus.STYLE_LABELS[style]}"))
    rng.shuffle(pairs)
    return pairs
