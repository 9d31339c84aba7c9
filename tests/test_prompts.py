"""Evaluation prompts are token for token the prompts TRL generates rollouts from, for every tokenizer
the project ships or composes (the tiny and SmolLM2 ones, and the Qwen2.5 and DeepSeek-R1-Distill chat
templates that TRL ships), so that an engine never adds a second BOS to a template that writes one."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import trl
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from trl import GRPOTrainer

from conftest import ROOT
from rlvr_sweeps.evaluation.evaluator import Evaluator
from rlvr_sweeps.policy.models import model_folder
from rlvr_sweeps.run.guards import RunCheckFailed, check_prompt_ids
from rlvr_sweeps.tasks.data import build_train_dataset, render_prompt

TEMPLATES = Path(trl.__file__).parent / "chat_templates"
R1_BOS = "<｜begin▁of▁sentence｜>"
PROMPT = OmegaConf.create(
    {"system": None, "template": "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."}
)
DATA = OmegaConf.create(
    {
        "name": "rg",
        "source": "reasoning_gym",
        "seed": 0,
        "size": 12,
        "generators": {"basic_arithmetic": {"weight": 1}, "gsm_symbolic": {"weight": 1}},
    }
)
EVAL = OmegaConf.create({"benchmarks": {}, "select_on": None})


def composed_tokenizer(tiny_folder: Path, template: str):
    """The tiny tokenizer with a real model family's chat template (and, for R1, its BOS behaviour)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    tokenizer.chat_template = (TEMPLATES / f"{template}.jinja").read_text()
    if template == "deepseek_r1_distill":
        tokenizer.add_special_tokens(
            {"bos_token": R1_BOS, "additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>", "<think>"]}
        )
        tokenizer.add_bos_token = True  # as the R1-Distill tokenizer: plain encoding adds BOS as well
    return tokenizer


@pytest.fixture(scope="module")
def tokenizers(tiny_folder, model_cache) -> dict:
    smollm2 = model_folder(OmegaConf.load(ROOT / "conf" / "model" / "smollm2.yaml"), model_cache)
    return {
        "tiny": AutoTokenizer.from_pretrained(tiny_folder),
        "smollm2": AutoTokenizer.from_pretrained(smollm2),
        "qwen2_5": composed_tokenizer(tiny_folder, "qwen2_5"),
        "deepseek_r1_distill": composed_tokenizer(tiny_folder, "deepseek_r1_distill"),
    }


def trl_prompt_ids(tokenizer, prompts: list) -> list[list[int]]:
    """TRL's own GRPOTrainer._tokenize_prompts, on the attributes it reads for text-only chats."""
    trainer = SimpleNamespace(
        _is_vlm=False,
        environment_factories=None,
        processing_class=tokenizer,
        tools=None,
        chat_template=None,
        chat_template_kwargs={},
    )
    return GRPOTrainer._tokenize_prompts(trainer, prompts)[0]


@pytest.mark.parametrize("name", ["tiny", "smollm2", "qwen2_5", "deepseek_r1_distill"])
def test_evaluation_prompt_ids_are_the_training_prompt_ids(tokenizers, name):
    tokenizer = tokenizers[name]
    dataset, _ = build_train_dataset(DATA, PROMPT, tokenizer)
    training = trl_prompt_ids(tokenizer, list(dataset["prompt"]))
    evaluator = Evaluator(EVAL, PROMPT, tokenizer, verifier=None, out_dir=Path("unused"))
    evaluation = evaluator.prompt_ids([{"question": q} for q in dataset["question"]])
    assert evaluation == training


def test_a_template_that_writes_bos_gets_exactly_one(tokenizers):
    tokenizer = tokenizers["deepseek_r1_distill"]
    bos = tokenizer.bos_token_id
    evaluator = Evaluator(EVAL, PROMPT, tokenizer, verifier=None, out_dir=Path("unused"))
    (ids,) = evaluator.prompt_ids([{"question": "What is 2 + 3?"}])
    assert ids[0] == bos and ids.count(bos) == 1
    # the text an engine used to get, tokenized by the engine's own tokenizer, starts with two
    text = tokenizer.apply_chat_template(
        render_prompt("What is 2 + 3?", PROMPT, True), add_generation_prompt=True, tokenize=False
    )
    assert tokenizer(text)["input_ids"][:2] == [bos, bos]


@pytest.mark.parametrize("name", ["tiny", "smollm2", "qwen2_5", "deepseek_r1_distill"])
def test_the_prompt_id_guard_passes_what_trl_and_the_evaluation_make(tokenizers, name):
    tokenizer = tokenizers[name]
    dataset, _ = build_train_dataset(DATA, PROMPT, tokenizer)
    first = dataset[0]
    (training,) = trl_prompt_ids(tokenizer, [first["prompt"]])
    evaluator = Evaluator(EVAL, PROMPT, tokenizer, verifier=None, out_dir=Path("unused"))
    check_prompt_ids(tokenizer, first["prompt"], training, evaluator.prompt_ids([first])[0])


def test_the_prompt_id_guard_stops_a_second_bos(tokenizers):
    tokenizer = tokenizers["deepseek_r1_distill"]  # its template writes BOS, and its tokenizer adds one to text
    prompt = render_prompt("What is 2 + 3?", PROMPT, True)
    text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    doubled = tokenizer(text)["input_ids"]  # the rendered text tokenized again with special tokens
    with pytest.raises(RunCheckFailed, match="starts with 2 BOS token.* implies 1"):
        check_prompt_ids(tokenizer, prompt, doubled, doubled)


def test_the_prompt_id_guard_stops_an_evaluation_that_tokenizes_otherwise(tokenizers):
    tokenizer = tokenizers["qwen2_5"]
    prompt = render_prompt("What is 2 + 3?", PROMPT, True)
    (training,) = trl_prompt_ids(tokenizer, [prompt])
    other = OmegaConf.create({"system": "You are a helpful assistant.", "template": PROMPT.template})
    (evaluation,) = Evaluator(EVAL, other, tokenizer, verifier=None, out_dir=Path("unused")).prompt_ids(
        [{"question": "What is 2 + 3?"}]
    )
    with pytest.raises(RunCheckFailed, match="Evaluation prompts are not tokenized as training prompts"):
        check_prompt_ids(tokenizer, prompt, training, evaluation)
