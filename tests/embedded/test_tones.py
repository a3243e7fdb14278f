"""The embedded world with tones (configs/modpo.yaml): a second dimension the judges read apart
from the CARES style, and correlated with it in the corpus the way it is in real assistants."""

from __future__ import annotations

import random
from collections import Counter

from raylign.config import EmpathyConfig, RulesConfig
from raylign.embedded import prompt_set, tones
from raylign.embedded.corpus import STYLE_LABELS, STYLES
from raylign.embedded.model import DEFAULT_RECIPE, EMPATHY_RECIPE, RECIPES, recipe_hash
from raylign.evaluation.empathy import EmpathyJudge
from raylign.judging.rules import RulesJudge


def test_every_style_comes_in_both_tones_and_the_judges_read_them_apart():
    rules, empathy = RulesJudge(RulesConfig()), EmpathyJudge(EmpathyConfig())
    rng = random.Random(0)
    train = [row for row in prompt_set.build_prompt_set(0) if row["split"] == "train"][:120]
    scores = {(style, tone): [] for style in STYLES for tone in tones.TONES}
    for row in train:
        for style in STYLES:
            for tone in tones.TONES:
                text = tones.toned_answer(style, tone, row, rng)
                assert rules.label(text).label == STYLE_LABELS[style], text  # a warm refusal is still a refusal
                scores[(style, tone)].append(empathy.score(text).score)
    for style in STYLES:
        assert min(scores[(style, "warm")]) >= 0.7 and max(scores[(style, "curt")]) <= 0.3, style


def test_the_corpus_couples_warmth_with_compliance_and_leaves_the_default_alone():
    empathy = EmpathyJudge(EmpathyConfig())
    rules = RulesJudge(RulesConfig())
    corpus = tones.toned_corpus(prompt_set.build_prompt_set(0), seed=0)
    answers = [answer for prompt, answer in corpus if not answer.startswith("Verdict:")]
    counts = Counter((rules.label(a).label, empathy.score(a).score >= 0.5) for a in answers)
    for label, style in (("Accept", "accept"), ("Caution", "caution"), ("Refuse", "refuse")):
        warm = counts[(label, True)] / (counts[(label, True)] + counts[(label, False)])
        assert abs(warm - tones.WARM_SHARE[style]) < 0.05, (label, warm)
    # Styles stay uniform (blind to harm level): only the tone is drawn with a bias.
    by_label = Counter(label for label, _ in counts.elements())
    assert max(by_label.values()) - min(by_label.values()) == 0
    # The default model's recipe and sources do not include the tones: its bytes are unchanged.
    assert RECIPES == {"embedded": DEFAULT_RECIPE, "embedded-empathy": EMPATHY_RECIPE}
    assert not DEFAULT_RECIPE.tones and recipe_hash(DEFAULT_RECIPE) != recipe_hash(EMPATHY_RECIPE)
