"""Personal data out of conversation text: every span found becomes its kind's placeholder `[KIND]`.

Microsoft Presidio finds the spans (its AnalyzerEngine) and replaces them (its AnonymizerEngine,
which also settles overlaps: the higher score keeps the overlap). raylign picks the recognizers:

- EMAIL, PHONE (Google's phonenumbers: the national formats of `phone_regions`, +CC numbers
  always; toll-free numbers name an organisation, not a person, and stay), IP_ADDRESS:
  Presidio's recognizers.
- NATIONAL_ID: Presidio's US SSN, ITIN, Medicare (MBI) and passport, UK NHS (checksum),
  National Insurance and passport, Canadian SIN (Luhn), Australian TFN and Medicare
  (checksums) and Indian Aadhaar (Verhoeff) recognizers; the weak formats count only with a
  context word near them ("ssn", "passport", "medicare", ...).
- URL: a URL with a path or query past its host (a bare domain names no one), its host a
  registered domain (the public suffix list) or an IP address.
- ADDRESS (a US or UK street address, with its unit, city, state, ZIP or postcode; a PO box),
  DATE_OF_BIRTH (a date, or a month and year, next to "born", "DOB", "date of birth",
  "birthday"), DATE (any other date with a day in it, never a bare year), MEDICAL_RECORD (the
  number after "MRN", "medical record", "chart", "patient ID"): raylign's patterns below.
- NAME: the conversation's own names (`names_in` of the fields in `name_fields`), each in full
  and each word of three letters or more, case aside; with `ner_model`, the PERSON entities of
  that spaCy pipeline in free text.
- `patterns`: more regexes per kind, a kind of their own allowed; `kinds` limits the kinds.

A number that is both a valid phone number and passes an ID's checksum is a PHONE unless an ID
word ("NHS", "SSN", "medicare", ...) comes just before it. Counts are per span replaced.

Offline by construction: with no `ner_model` the NLP engine is a blank English spaCy pipeline
(a tokenizer: nothing to download) and no NER recognizer is loaded; the public suffix list is
tldextract's bundled snapshot, never fetched. Build one Redactor per process (about half a
second; importing Presidio takes several, as it imports transformers) and reuse it.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
from importlib.metadata import version as package_version
from pathlib import Path
from typing import NamedTuple, Sequence
from urllib.parse import urlsplit

import phonenumbers
import regex
import spacy
import tldextract
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, Pattern, PatternRecognizer, RecognizerRegistry
from presidio_analyzer import RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (AuMedicareRecognizer, AuTfnRecognizer, CaSinRecognizer,
                                                      EmailRecognizer, InAadhaarRecognizer, IpRecognizer,
                                                      NhsRecognizer, PhoneRecognizer, SpacyRecognizer,
                                                      UkNinoRecognizer, UkPassportRecognizer, UsItinRecognizer,
                                                      UsMbiRecognizer, UsPassportRecognizer, UsSsnRecognizer)
from presidio_anonymizer import AnonymizerEngine
from presidio_anonymizer.entities import ConflictResolutionStrategy, OperatorConfig
from spacy.language import Language

from raylign.config import RedactionConfig

# Presidio logs a warning per call for things raylign does on purpose (entities no recognizer
# of this registry supports, NER labels left unmapped): only its errors are worth a line.
for _name in ("presidio-analyzer", "presidio-anonymizer"):
    logging.getLogger(_name).setLevel(logging.ERROR)

# tldextract.extract, which Presidio's e-mail recognizer calls, downloads the public suffix
# list on first use (and blocks while the network is unreachable). This one reads the snapshot
# that ships with tldextract, and caches nothing on disk.
_SUFFIXES = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

_LANG = "en"
_FLAGS = regex.IGNORECASE | regex.MULTILINE  # Presidio compiles patterns with the `regex` module
_CASED = regex.MULTILINE  # for patterns that tell a street name by its capital letter
_RULE_SCORE = 0.85  # raylign's patterns: above Presidio's weak ones, so they win an overlap
_USER_SCORE = 1.0  # the config's own patterns win every overlap

# --- dates ---------------------------------------------------------------------------------
_MONTH = (r"(?:jan(?:uary|\.)?|feb(?:ruary|\.)?|mar(?:ch|\.)?|apr(?:il|\.)?|may|june?|july?|aug(?:ust|\.)?"
          r"|sep(?:t(?:ember|\.)?|\.)?|oct(?:ober|\.)?|nov(?:ember|\.)?|dec(?:ember|\.)?)")
# With no year after it, "may" and "march" are more often words ("2 may help"): capitals only.
_MONTH_ALONE = _MONTH.replace("|mar(?:", "|(?-i:Mar)(?:").replace("|may|", "|(?-i:May)|")
_DAY = r"(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d{2}"
_MM, _DD = r"(?:0?[1-9]|1[0-2])", r"(?:0?[1-9]|[12]\d|3[01])"
_DATES = {  # every written form of a date with a day
    "numeric": rf"(?<![\w/.-])(?:{_MM}(?P<s>[-/]){_DD}|{_DD}(?P<s>[-/]){_MM})(?P=s)(?:{_YEAR}|\d{{2}})(?![-/.]?\d)",
    "dotted": rf"(?<![\w/.-])(?:{_MM}\.{_DD}|{_DD}\.{_MM})\.{_YEAR}(?![-/.]?\d)",
    "iso": rf"(?<![\w/.-]){_YEAR}(?P<s>[-/.]){_MM}(?P=s){_DD}(?!\d)",
    "month day year": rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b",
    "month day": rf"\b{_MONTH_ALONE}\s+{_DAY}\b(?![:.]?\d)",
    "day month year": rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b",
    "day month": rf"\b{_DAY}\s+(?:of\s+)?{_MONTH_ALONE}(?!\w)",
}
_BIRTH_DATES = {  # what a date of birth may also be: a month and year
    **_DATES,
    "month year": rf"\b{_MONTH},?\s+{_YEAR}\b",
    "numeric month year": rf"(?<![\w/.-]){_MM}/{_YEAR}\b",
}
_BIRTH = r"(?:born|birth\s*date|date\s+of\s+birth|birthday|b-?day|dob|d\.o\.b\.?)"
_BIRTH_BEFORE = rf"(?<=\b{_BIRTH}(?:[\s:=#,.'()-]|\b(?:is|was|on|in|the|of|s|my|will\s+be|date)\b){{0,12}})"
_BIRTH_AFTER = rf"(?=\s*[(\[,-]?\s*(?:{_BIRTH})\b)"

# --- street addresses ----------------------------------------------------------------------
_SUFFIX = (r"(?i:(?:street|avenue|road|lane|drive|boulevard|court|place|way|terrace|circle|parkway|highway|close"
           r"|crescent|gardens|grove|square|row|mews|trail|walk|park|plaza|loop|hill|alley|broadway)\b"
           r"|(?:st|ave|rd|ln|dr|blvd|ct|pl|ter|cir|pkwy|hwy|cres|sq|trl)\b\.?)")  # the dot of an abbreviation
_UNIT = r"(?i:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm|bldg|building)\.?\s*#?\s*[A-Za-z]?\d+[A-Za-z]?"
_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}"  # UK
_STREET = (rf"(?:{_UNIT},?\s+)?\d{{1,5}}[A-Za-z]?(?:-\d{{1,5}}[A-Za-z]?)?"  # 221B, 12-14, "Flat 3, 12 ..."
           rf"(?:\s+(?:[A-Z][A-Za-z'’.-]*|\d{{1,3}}(?:st|nd|rd|th))){{1,4}}\s+{_SUFFIX}"  # Baker, W. 34th
           rf"(?:\s+(?:[NS][EW]?|[EW])\b)?"  # Ave NW (its dot, if any, more often ends the sentence)
           rf"(?:,?\s+{_UNIT}|\s*#\s*\d+[A-Za-z]?)?")  # Apt 4, #12
_CITY_WORD = r"(?:St\.\s+)?[A-Z][a-z]+(?:['-][A-Za-z]+)*"  # Springfield, St. Louis, Wilkes-Barre
_PLACE = (rf"(?:,\s*{_CITY_WORD}(?:\s+{_CITY_WORD}){{0,2}})?"  # city
          rf"(?:,?\s+(?:[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?|{_POSTCODE}|[A-Z]{{2}}\b(?!\s*\d)))?")  # state ZIP
_ADDRESSES = {
    "street": rf"(?<![\w.]){_STREET}{_PLACE}",
    # Lower case after a word that announces an address ("i live at 12 oak lane").
    "announced street": (r"(?i)(?<=\b(?:live|lives|living|lived|reside|resides|address|addr|located|moved|staying)"
                         r"(?:\s+(?:is|at|to|on|in|now|:))*:?\s*)"
                         rf"\d{{1,5}}[a-z]?(?:\s+[a-z][a-z'’.-]*){{1,4}}\s+{_SUFFIX}(?:,?\s+{_UNIT})?"
                         rf"(?:,\s*[a-z]+(?:\s+[a-z]+){{0,2}},?\s+[a-z]{{2}}\s+\d{{5}}(?:-\d{{4}})?)?"),
    "po box": r"(?i)\b(?:p\.?\s?o\.?\s?box|post\s+office\s+box)\s+\d{1,6}\b",
}

# --- medical record numbers ----------------------------------------------------------------
_RECORD = (r"(?:mrn|m\.r\.n\.?|medical\s+record(?:\s+(?:number|num|no\.?|id|#))?"
           r"|med\s+rec(?:ord)?(?:\s+(?:number|no\.?|#))?|chart(?:\s+(?:number|num|no\.?|id|#))?"
           r"|patient\s+(?:id|identifier|number|num|no\.?|#)|hospital\s+(?:number|no\.?|id))")
_MEDICAL_RECORDS = {
    # The number only: "MRN [MEDICAL_RECORD]" still says what was there.
    "keyed": (rf"(?<=\b{_RECORD}(?:\s*(?:is|was|:|#|=|-)\s*|\s+)?)"
              r"(?=[A-Za-z0-9-]*\d)[A-Za-z]{0,4}-?\d[A-Za-z0-9-]{4,15}\b"),  # five characters or more
}

# Checksum recognizers (NHS, Australian Medicare, SIN, ...) score a number that passes 1.0, above
# PHONE, and about one ten-digit phone number in ten passes one: a number PHONE also found is an
# ID only after one of these words.
_ID_WORDS = regex.compile(r"\b(?:ssn|social\s+security|social\s+insurance|sin|itin|taxpayer|tax\s+file|tfn|mbi"
                          r"|medicare|passport|nhs|national\s+(?:health|insurance|id)|ni\s+number|nino|aadhaar"
                          r"|uidai|id\s+(?:number|no)|identity)\b[^\n]{0,30}$", regex.IGNORECASE)
_PHONE_LIKE = regex.compile(r"\d(?:[\s().\-/]{0,3}\d){6}")
# Labels and their count bounded: on "a.a.a.a..." an unbounded host pattern takes quadratic time.
_HOST = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?){1,8}"
_URL = (rf"(?:\b(?:https?|ftp)://|(?<![\w.@/-])(?={_HOST}(?::\d{{1,5}})?[/?#]))"
        r"[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]")


class Redacted(NamedTuple):
    """One text with its personal data replaced."""

    text: str
    """The text, each span found replaced by `[KIND]`."""
    counts: dict[str, int]
    """Spans replaced per kind (only kinds found), never the values."""


class _OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, its domain checked against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        return _SUFFIXES(pattern_text).fqdn != ""


class _UrlRecognizer(PatternRecognizer):
    """A URL whose path or query goes past the host, on a registered domain or an IP address."""

    def __init__(self):
        super().__init__(supported_entity="URL", patterns=[Pattern("url with a path", _URL, 0.6)],
                         context=["url", "link", "website"], global_regex_flags=_FLAGS)

    def validate_result(self, pattern_text: str) -> bool:
        parts = urlsplit(pattern_text if "://" in pattern_text else "http://" + pattern_text)
        if not (parts.path.strip("/") or parts.query):
            return False
        try:
            ipaddress.ip_address(parts.hostname or "")
            return "://" in pattern_text  # "10.0.0.5/24" is a network, not a link
        except ValueError:
            found = _SUFFIXES(parts.hostname or "")
            return bool(found.suffix and found.domain)


class _PhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer, less toll-free numbers (a helpline, a pharmacy's line)."""

    def analyze(self, text, entities, nlp_artifacts=None):
        # phonenumbers tries every digit run in every region, three quarters of the time a text
        # takes: a text with no seven digits in a row (separators aside) cannot hold a number.
        if not _PHONE_LIKE.search(text):
            return []
        return [r for r in super().analyze(text, entities, nlp_artifacts) if not _toll_free(text[r.start:r.end])]


def _toll_free(number: str) -> bool:
    try:
        parsed = phonenumbers.parse(number, "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.TOLL_FREE


@Language.component("raylign_lower_lemma")
def _lower_lemma(doc):
    """Lemmas for Presidio's context words ("ssn" near a number): the lower-cased token, as no
    lemmatizer comes with a blank pipeline."""
    for token in doc:
        token.lemma_ = token.lower_
    return doc


def _nlp(ner_model: str | None) -> spacy.language.Language:
    """The spaCy pipeline Presidio tokenizes with: blank English, or the NER model given."""
    if ner_model is None:
        nlp = spacy.blank(_LANG)
    else:
        # Presidio's own loader would run `spacy download` for a name it does not find.
        if not (spacy.util.is_package(ner_model) or Path(ner_model).expanduser().is_dir()):
            raise ValueError(f"logs.redaction.ner_model {ner_model} is neither an installed spaCy package nor a "
                             f"folder: install the pipeline's wheel (e.g. en_core_web_lg from "
                             f"github.com/explosion/spacy-models/releases) or give its folder")
        try:
            nlp = spacy.load(Path(ner_model).expanduser() if Path(ner_model).expanduser().is_dir() else ner_model)
        except (OSError, ValueError) as e:
            raise ValueError(f"logs.redaction.ner_model {ner_model} is not a spaCy pipeline: "
                             f"{str(e).splitlines()[0]}") from None
        # Only entities are read: the tagger, parser and lemmatizer would only cost time.
        slow = {"parser", "tagger", "morphologizer", "lemmatizer", "trainable_lemmatizer", "attribute_ruler",
                "senter", "textcat", "textcat_multilabel"}
        nlp.select_pipes(disable=[name for name in nlp.pipe_names if name in slow])
    nlp.add_pipe("raylign_lower_lemma", last=True)
    return nlp


def _national_ids() -> list[EntityRecognizer]:
    classes = [UsSsnRecognizer, UsItinRecognizer, UsMbiRecognizer, UsPassportRecognizer, NhsRecognizer,
               UkNinoRecognizer, UkPassportRecognizer, CaSinRecognizer, AuTfnRecognizer, AuMedicareRecognizer,
               InAadhaarRecognizer]
    return [cls(supported_entity="NATIONAL_ID") for cls in classes]


def _patterns(kind: str, named: dict[str, str], flags: int = _FLAGS, score: float = _RULE_SCORE) -> PatternRecognizer:
    return PatternRecognizer(supported_entity=kind, name=f"raylign {kind.lower()}", global_regex_flags=flags,
                             patterns=[Pattern(name, rx, score) for name, rx in named.items()])


def _user_patterns(patterns: dict[str, list[str]]) -> list[PatternRecognizer]:
    recognizers = []
    for kind, regexes in patterns.items():
        for i, rx in enumerate(regexes):
            try:
                regex.compile(rx, _FLAGS)
            except regex.error as e:
                raise ValueError(f"logs.redaction.patterns.{kind}[{i}] is not a valid regex: {e}") from None
        if regexes:
            recognizers.append(_patterns(kind.upper(), {f"config {i}": rx for i, rx in enumerate(regexes)},
                                         score=_USER_SCORE))
    return recognizers


@functools.lru_cache(maxsize=256)  # a conversation's turns share their names
def _name_pattern(names: tuple[str, ...]) -> regex.Pattern | None:
    """Each name in full and each of its words of three letters or more, case aside, whole words."""
    terms = set()
    for name in names:
        name = " ".join(name.split())
        if len(name) >= 2:
            terms.add(name)
        terms.update(w for w in regex.findall(r"[\p{L}'’]+", name) if sum(c.isalpha() for c in w) >= 3)
    if not terms:
        return None
    alternatives = [regex.escape(t).replace(r"\ ", r"\s+") for t in sorted(terms, key=len, reverse=True)]
    return regex.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", regex.IGNORECASE)


class Redactor:
    """Finds and replaces personal data in text (module docstring: what it finds)."""

    def __init__(self, cfg: RedactionConfig):
        self.cfg = cfg
        kinds = set(cfg.kinds)
        unknown = [r for r in cfg.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"logs.redaction.phone_regions: {', '.join(unknown)} not a region phonenumbers knows "
                             f"(two-letter ISO 3166 codes: US, GB, ...)")
        by_kind: dict[str, list[EntityRecognizer]] = {
            "EMAIL": [_OfflineEmailRecognizer(supported_entity="EMAIL")],
            # Leniency 2 (strict grouping): "1.2.23. 12/2019" is a valid Indian number at 1.
            "PHONE": [_PhoneRecognizer(supported_entity="PHONE", supported_regions=list(cfg.phone_regions),
                                       leniency=2)],
            "IP_ADDRESS": [IpRecognizer(supported_entity="IP_ADDRESS")],
            "URL": [_UrlRecognizer()],
            "NATIONAL_ID": _national_ids(),
            "ADDRESS": [_patterns("ADDRESS", _ADDRESSES, flags=_CASED)],
            "DATE_OF_BIRTH": [_patterns("DATE_OF_BIRTH", {
                **{f"{n} after a birth word": _BIRTH_BEFORE + rf"(?:{rx})" for n, rx in _BIRTH_DATES.items()},
                **{f"{n} before a birth word": rf"(?:{rx})" + _BIRTH_AFTER for n, rx in _DATES.items()}})],
            # Below DATE_OF_BIRTH's score: a date of birth is found by both, and stays one.
            "DATE": [_patterns("DATE", _DATES, score=_RULE_SCORE - 0.1)],
            "MEDICAL_RECORD": [_patterns("MEDICAL_RECORD", _MEDICAL_RECORDS)],
            "NAME": [SpacyRecognizer(supported_entities=["NAME"])] if cfg.ner_model else [],
        }
        recognizers = [r for kind, rs in by_kind.items() if kind in kinds for r in rs]
        # The config's patterns for a kind left out of `kinds` are left out with it.
        recognizers += _user_patterns({k: v for k, v in cfg.patterns.items() if k.upper() in kinds
                                       or k.upper() not in by_kind})
        self._entities = sorted({e for r in recognizers for e in r.supported_entities})
        self._names = "NAME" in kinds
        self._placeholders = {kind: OperatorConfig("replace", {"new_value": f"[{kind}]"})
                              for kind in [*by_kind, *self._entities]}
        self._analyzer = None
        if recognizers:  # an empty registry would make Presidio load all of its own
            engine = SpacyNlpEngine(
                models=[{"lang_code": _LANG, "model_name": cfg.ner_model or "blank"}],
                ner_model_configuration=NerModelConfiguration(
                    model_to_presidio_entity_mapping={"PERSON": "NAME", "PER": "NAME"}))
            engine.nlp = {_LANG: _nlp(cfg.ner_model)}  # loaded here: the engine's load() would download
            self._analyzer = AnalyzerEngine(registry=RecognizerRegistry(recognizers, supported_languages=[_LANG]),
                                            nlp_engine=engine, supported_languages=[_LANG])
        self._anonymizer = AnonymizerEngine()
        self.redact("warm-up: MRN 1234567, 03/14/1985, a@example.org")  # compiles every pattern now

    @property
    def version(self) -> str:
        """Presidio's version and a digest of the config and of this module: what a redacted
        text depends on."""
        digest = hashlib.sha256(self.cfg.model_dump_json().encode() + Path(__file__).read_bytes()).hexdigest()[:12]
        return f"presidio-{package_version('presidio-analyzer')}@{digest}"

    def redact(self, text: str, names: Sequence[str] = ()) -> Redacted:
        """`text` with every span found replaced by `[KIND]`; `names` are this conversation's
        people (names_in), redacted as NAME when NAME is among the kinds."""
        found: list[RecognizerResult] = []
        if self._analyzer is not None and text.strip():
            found = self._analyzer.analyze(text=text, language=_LANG, entities=self._entities,
                                           score_threshold=self.cfg.min_score)
        phones = [r for r in found if r.entity_type == "PHONE"]
        found = [r for r in found if not (r.entity_type == "NATIONAL_ID" and any(r.contained_in(p) for p in phones)
                                          and not _ID_WORDS.search(text, max(0, r.start - 40), r.start))]
        pattern = _name_pattern(tuple(names)) if self._names else None
        if pattern is not None:
            found += [RecognizerResult("NAME", m.start(), m.end(), 1.0) for m in pattern.finditer(text)]
        if not found:
            return Redacted(text, {})
        # REMOVE_INTERSECTIONS: of two kinds that overlap, the lower score gives up only the
        # overlap, so every character found stays covered.
        result = self._anonymizer.anonymize(text=text, analyzer_results=found, operators=self._placeholders,
                                            conflict_resolution=ConflictResolutionStrategy.REMOVE_INTERSECTIONS,
                                            merge_entities_with_spaces=False)  # a count per span found
        counts: dict[str, int] = {}
        for item in result.items:
            counts[item.entity_type] = counts.get(item.entity_type, 0) + 1
        return Redacted(result.text, dict(sorted(counts.items())))


def names_in(record: dict, fields: Sequence[str]) -> list[str]:
    """The names in a conversation record's fields: dotted keys (`metadata.patient_name`) whose
    values are strings or lists of strings; a list of objects on the way is read item by item
    (`participants.name`). Missing keys and other values are left out."""
    names: list[str] = []
    for field in fields:
        values = [record]
        for key in field.split("."):
            values = [v for value in values for v in (value if isinstance(value, list) else [value])]
            values = [value[key] for value in values if isinstance(value, dict) and key in value]
        for value in values:
            for name in value if isinstance(value, list) else [value]:
                if isinstance(name, str) and name.strip() and name.strip() not in names:
                    names.append(name.strip())
    return names
