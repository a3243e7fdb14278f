"""Checks that the models a run names can be loaded, before any role is placed.

An engine that cannot load its model fails inside a Ray actor, after its restarts, with a
traceback; these checks say the same in a second or two, in one line that names the config key
and what was tried. A local folder must hold a transformers config of the right kind (a causal
language model for the policy and for LLM judges, a sequence classifier for reward models), its
weights and a tokenizer. A hub id is looked up in the local cache first; if it is not there, the
hub is probed with a short timeout before transformers is asked (whose own retries take ~25 s
when no hub answers).
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

from raylign.config import EMBEDDED_MODELS

WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")


class ModelError(ValueError):
    """A model that cannot be loaded, in one line."""


def models_to_check(cfg) -> list[tuple[str, str, str]]:
    """(path, config key, kind) of every model a run loads: the policy, LLM judges on their own
    engines and reward models, ensemble members included. The embedded model is built, not loaded."""
    out = [] if cfg.model.path in EMBEDDED_MODELS else [(cfg.model.path, "model.path", "causal_lm")]

    def judge_models(judge, key: str) -> None:
        if judge.kind == "llm" and judge.llm.backend == "vllm":
            out.append((judge.llm.model, f"{key}.llm.model", "causal_lm"))
        if judge.kind == "reward_model":
            out.extend((path, f"{key}.reward_model.models.{objective}", "classifier")
                       for objective, path in judge.reward_model.models.items())
        for j, member in enumerate(judge.ensemble.members if judge.kind == "ensemble" else []):
            judge_models(member, f"{key}.ensemble.members[{j}]")

    for i, judge in enumerate(cfg.judges):
        judge_models(judge, f"judges[{i}]")
    return out


def check_model(path: str, key: str, kind: str = "causal_lm") -> None:
    """Raise ModelError unless `path` (a folder or hub id, the value of config key `key`) holds
    a model of `kind`: `causal_lm` or `classifier`."""
    from transformers import AutoConfig

    folder = Path(path).expanduser()
    local = folder.exists() or path.startswith((".", "/", "~")) or path.count("/") > 1
    if local:
        if not folder.is_dir():
            raise ModelError(f"{key}: {path!r} is not a folder (expected a transformers model folder or a hub id)")
        if not (folder / "config.json").is_file():
            if (folder / "adapter_config.json").is_file():
                raise ModelError(f"{key}: {path} is a LoRA adapter, not a model: give its base model here "
                                 "(raylign eval takes adapters with --policy)")
            raise ModelError(f"{key}: {path} holds no config.json: not a transformers model folder")
        if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
            raise ModelError(f"{key}: {path} holds no weights (*.safetensors or pytorch_model*.bin)")
    else:
        _check_hub(path, key)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - any failure to read the config is the same one line
        raise ModelError(f"{key}: {path!r} could not be read as a transformers model ({_first_line(e)})") from None
    _check_kind(config, path, key, kind)
    if local:
        _check_tokenizer(path, key)


def _check_kind(config, path: str, key: str, kind: str) -> None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    architectures = config.architectures or []
    if kind == "causal_lm":
        ok = any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures) or (
            not architectures and type(config) in MODEL_FOR_CAUSAL_LM_MAPPING)
        what = "a causal language model (…ForCausalLM)"
    else:
        ok = any(a.endswith("ForSequenceClassification") for a in architectures) or (
            not architectures and type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING)
        what = "a sequence-classification model (…ForSequenceClassification)"
    if not ok:
        raise ModelError(f"{key}: {path} is not {what}; its config names {architectures or [config.model_type]}")


def _check_tokenizer(path: str, key: str) -> None:
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{key}: {path} has no tokenizer that loads ({_first_line(e)})") from None


def _check_hub(model_id: str, key: str) -> None:
    """A hub id: fine when cached; otherwise the hub must answer, or the error says a folder works."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise ModelError(f"{key}: {model_id!r} is not a local folder, is not in the local hub cache, and the hub "
                         "is off (HF_HUB_OFFLINE): give the folder of a saved model")
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError as e:
        raise ModelError(f"{key}: {model_id!r} is not a local folder, and the hub ({endpoint.hostname}) cannot be "
                         f"reached ({e.strerror or type(e).__name__}): give the folder of a saved model") from None


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
