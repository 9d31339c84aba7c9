"""Training problems: local files with column mapping, answers cut out of text, a seeded subset; and
prompts that are dropped, and counted, when they leave no room for a completion."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from conftest import ROOT
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.tasks.data import build_train_dataset, load_problems, tokenize_prompts

GSM8K = OmegaConf.load(ROOT / "conf" / "data" / "gsm8k.yaml")


@pytest.fixture
def gsm8k_file(tmp_path):
    rows = [
        {"question": f"Tom has {i} apples and buys {i}. How many?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"}
        for i in range(30)
    ]
    rows.append({"question": "No final answer here.", "answer": "it is 3"})
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_answer_regex_cuts_the_answer_out_of_the_solution(gsm8k_file):
    problems = load_problems(OmegaConf.merge(GSM8K, {"path": str(gsm8k_file), "split": "train"}))
    assert len(problems) == 30  # the row without "####" is left out
    for problem in problems:
        i = int(problem["question"].split()[2])
        assert problem["answer"] == str(2 * i)


def test_max_samples_takes_a_seeded_subset(gsm8k_file):
    cfg = OmegaConf.merge(GSM8K, {"path": str(gsm8k_file), "split": "train", "max_samples": 5})
    first, again = load_problems(cfg), load_problems(cfg)
    assert len(first) == 5 and first == again
    other_seed = load_problems(OmegaConf.merge(cfg, {"seed": 1}))
    assert [p["question"] for p in other_seed] != [p["question"] for p in first]


def test_a_regex_that_matches_nothing_is_refused(gsm8k_file):
    with pytest.raises(UserError, match="answer_regex"):
        load_problems(OmegaConf.merge(GSM8K, {"path": str(gsm8k_file), "split": "train", "answer_regex": "@@(.+)@@"}))


def test_prompts_without_room_for_a_completion_are_dropped_and_counted(gsm8k_file, tiny_folder):
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    cfg = OmegaConf.merge(GSM8K, {"path": str(gsm8k_file), "split": "train"})
    prompt = OmegaConf.create({"system": None, "template": "{question}"})
    full, report = build_train_dataset(cfg, prompt, tokenizer)
    lengths = sorted(len(ids) for ids in tokenize_prompts(tokenizer, list(full["prompt"])))
    room = lengths[-1] - 1  # the longest prompts do not fit
    kept, report = build_train_dataset(cfg, prompt, tokenizer, max_prompt_tokens=room)
    assert report["dropped_too_long"] == sum(n > room for n in lengths) > 0
    assert report["problems"] == len(kept) == sum(n <= room for n in lengths)
    with pytest.raises(UserError, match="max_completion_length"):
        build_train_dataset(cfg, prompt, tokenizer, max_prompt_tokens=lengths[0] - 1)
