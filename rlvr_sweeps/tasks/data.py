"""Training problems with known answers, turned into prompts with the project's one template.

Sources: reasoning-gym (procedural, offline) and datasets from the Hub or a local file or folder,
with column mapping. Every problem becomes {"prompt", "question", "answer", "problem_id"}; the
reward functions read `answer` (TRL passes dataset columns to them by name). Prompts become token
ids in one place (`tokenize_prompts`), the way TRL tokenizes its rollout prompts, for training and
evaluation alike.
"""

from __future__ import annotations

import difflib
import logging
import random
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from ..infra.hub import hub_reachable, local_snapshot

log = logging.getLogger(__name__)

OFFLINE_CHOICES = "data=reasoning_gym (procedural, no download), or data.path=/local/file/or/folder"
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def check_local_path(source: str) -> None:
    """A local path (rather than a Hub id "org/name": absolute, relative with ./ or ~, deeper than one
    slash, or a data file's suffix) must exist."""
    local = source.startswith(("/", ".", "~")) or source.count("/") > 1 or Path(source).suffix in LOCAL_SUFFIXES
    if local and not Path(source).expanduser().exists():
        raise UserError(
            f"data.path={source} does not exist: give an existing .jsonl/.json/.parquet/.csv file or "
            "dataset folder, or a Hub id such as knoveleng/open-rs."
        )


def load_problems(data_cfg: DictConfig) -> list[dict]:
    """[{"question", "answer", "problem_id"}], in a fixed order for a fixed seed."""
    if data_cfg.source == "reasoning_gym":
        return reasoning_gym_problems(data_cfg.generators, int(data_cfg.size), int(data_cfg.seed))
    if data_cfg.source == "hub":
        return _hub_problems(data_cfg)
    raise UserError(f"data.source={data_cfg.source!r} is unknown; use reasoning_gym or hub.")


def reasoning_gym_problems(generators: DictConfig, size: int, seed: int) -> list[dict]:
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    specs = OmegaConf.to_container(generators, resolve=True)
    total_weight = sum(float(spec.get("weight", 1.0)) for spec in specs.values())
    problems = []
    for index, (name, spec) in enumerate(specs.items()):
        if name not in DATASETS:
            close = difflib.get_close_matches(name, DATASETS, n=3)
            raise UserError(
                f"reasoning-gym has no generator {name!r}"
                + (f"; did you mean {', '.join(close)}?" if close else ".")
                + " Arithmetic ones: basic_arithmetic, chain_sum, gsm_symbolic, fraction_simplification, gcd, lcm, "
                "products."
            )
        options = {k: v for k, v in spec.items() if k != "weight"}
        count = max(1, round(size * float(spec.get("weight", 1.0)) / total_weight))
        try:
            dataset = reasoning_gym.create_dataset(name, size=count, seed=seed * 1000 + index, **options)
        except (TypeError, ValueError, AssertionError) as err:
            raise UserError(f"reasoning-gym generator {name!r} refused its options {options}: {err}") from err
        problems += [
            {"question": item["question"], "answer": str(item["answer"]), "problem_id": f"{name}/{seed}/{i}"}
            for i, item in enumerate(dataset)
        ]
    random.Random(seed).shuffle(problems)
    return problems[:size]


def _hub_problems(data_cfg: DictConfig) -> list[dict]:
    dataset = _load_hub_dataset(data_cfg)
    missing = [c for c in (data_cfg.question_column, data_cfg.answer_column) if c not in dataset.column_names]
    if missing:
        raise UserError(
            f"Dataset {data_cfg.path} has no column {', '.join(map(repr, missing))}; its columns are "
            f"{dataset.column_names}. Set data.question_column / data.answer_column."
        )
    pattern = re.compile(data_cfg.answer_regex, re.DOTALL) if data_cfg.answer_regex else None
    problems, unmatched = [], 0
    for i, row in enumerate(dataset):
        answer = str(row[data_cfg.answer_column])
        if pattern:
            match = pattern.search(answer)
            if not match:
                unmatched += 1
                continue
            answer = match.group(1)
        problems.append(
            {
                "question": str(row[data_cfg.question_column]),
                "answer": answer.strip(),
                "problem_id": f"{data_cfg.name}/{i}",
            }
        )
    if unmatched:
        log.warning(
            "%d rows of %s had no answer matching data.answer_regex and were left out", unmatched, data_cfg.path
        )
    if not problems:
        raise UserError(f"Dataset {data_cfg.path} gave no usable problems (check data.answer_regex).")
    random.Random(int(data_cfg.seed)).shuffle(problems)
    return problems[: data_cfg.max_samples] if data_cfg.max_samples else problems


def _load_hub_dataset(data_cfg: DictConfig):
    import datasets

    source = str(data_cfg.path)
    check_local_path(source)
    local = Path(source).expanduser()
    try:
        if local.is_file():
            kind = LOCAL_SUFFIXES.get(local.suffix)
            if kind is None:
                raise UserError(f"data.path={source}: use a .jsonl, .json, .parquet or .csv file, or a folder.")
            return datasets.load_dataset(kind, data_files=str(local), split=data_cfg.split)
        if local.is_dir():
            return datasets.load_dataset(str(local), name=data_cfg.config_name, split=data_cfg.split)
        revision = data_cfg.get("revision")
        cached = local_snapshot(source, "dataset", revision)
        if cached is None and not hub_reachable():
            raise UserError(
                f"Dataset {source!r} (data={data_cfg.name}) is not cached here and the Hugging Face Hub cannot "
                f"be reached. Offline choices: {OFFLINE_CHOICES}."
            )
        if cached:
            return datasets.load_dataset(cached, name=data_cfg.config_name, split=data_cfg.split)
        return datasets.load_dataset(source, name=data_cfg.config_name, split=data_cfg.split, revision=revision)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many types for a bad path/config/split
        raise UserError(
            f"Could not load dataset {source!r} (config {data_cfg.config_name}, split {data_cfg.split}): {err}"
        ) from err


def render_prompt(question: str, prompt_cfg: DictConfig, conversational: bool):
    """The project's one template; a chat (list of messages) when the model has a chat template."""
    text = prompt_cfg.template.replace("{question}", question)
    if not conversational:
        return text if not prompt_cfg.system else f"{prompt_cfg.system}\n\n{text}"
    messages = [{"role": "system", "content": prompt_cfg.system}] if prompt_cfg.system else []
    return messages + [{"role": "user", "content": text}]


def tokenize_prompts(tokenizer, prompts: list, chat_template_kwargs: dict | None = None) -> list[list[int]]:
    """Prompt token ids exactly as TRL's GRPOTrainer makes them for rollouts (`_tokenize_prompts`): the
    chat template with the generation prompt for chats, the tokenizer's own special tokens for text."""
    if not prompts:
        return []
    if isinstance(prompts[0], list):
        return tokenizer.apply_chat_template(
            conversation=prompts,
            tools=None,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            **(chat_template_kwargs or {}),
        )["input_ids"]
    return tokenizer(text=prompts)["input_ids"]


def build_train_dataset(data_cfg: DictConfig, prompt_cfg: DictConfig, tokenizer, max_prompt_tokens: int | None = None):
    """The training problems as a datasets.Dataset, and a report of them. Prompts longer than
    `max_prompt_tokens` (the context left beside max_completion_length) are left out and counted."""
    import datasets

    conversational = bool(getattr(tokenizer, "chat_template", None))
    rows = [{"prompt": render_prompt(p["question"], prompt_cfg, conversational), **p} for p in load_problems(data_cfg)]
    lengths = [len(ids) for ids in tokenize_prompts(tokenizer, [r["prompt"] for r in rows])]
    kept = [r for r, n in zip(rows, lengths) if max_prompt_tokens is None or n <= max_prompt_tokens]
    report = {
        "name": data_cfg.name,
        "problems": len(kept),
        "dropped_too_long": len(rows) - len(kept),
        "max_prompt_tokens": max_prompt_tokens,
        "longest_prompt_tokens": max(lengths, default=0),
    }
    if len(kept) < len(rows):
        log.warning(
            "Left out %d of %d training prompts longer than %d tokens (the model's context minus "
            "trainer.max_completion_length)",
            len(rows) - len(kept),
            len(rows),
            max_prompt_tokens,
        )
    if not kept:
        raise UserError(
            f"Every training prompt of {data_cfg.name} is longer than the {max_prompt_tokens} tokens the "
            f"context leaves beside trainer.max_completion_length; lower it."
        )
    log.info(
        "Training on %d problems from %s (%s prompts)", len(kept), data_cfg.name, "chat" if conversational else "plain"
    )
    return datasets.Dataset.from_list(kept), report
