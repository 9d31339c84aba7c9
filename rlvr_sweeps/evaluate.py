"""Evaluate a model, or a model with a trained LoRA adapter, without training.

    python -m rlvr_sweeps.evaluate model=smollm2 eval=[reasoning_gym_heldout]
    python -m rlvr_sweeps.evaluate model=smollm2 adapter=runs/default/default eval.backend=vllm

Writes summary.json (eval/<benchmark>/pass@k ...) and per-sample records into its own run folder. As
in training, the problems of `data` are left out of the benchmarks: with the run's own overrides, the
numbers are the run's final ones.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from . import resolvers  # noqa: F401 - registers the resolvers the configs use
from .errors import UserError
from .evaluation.evaluator import Evaluator, flat_metrics
from .generation.sampling import benchmarks_from_config, resolve_backend
from .infra.hardware import detect_hardware
from .policy.adapters import vllm_max_lora_rank
from .policy.models import load_model
from .run.record import RunRecord, now_iso, provenance, run_identity, saved_config
from .tasks.data import load_problems
from .training.rewards import make_verifier

log = logging.getLogger(__name__)


def adapter_folder(adapter: str | None) -> Path | None:
    """A LoRA adapter folder from a run folder (its final adapter) or a checkpoint folder."""
    if not adapter:
        return None
    path = Path(adapter).expanduser().resolve()
    for candidate in (path, path / "final"):
        if (candidate / "adapter_config.json").exists():
            if candidate.name != "final" and (run := _pissa_run_of(candidate)):
                raise UserError(
                    f"adapter={adapter}: a checkpoint of a PiSSA run, whose adapter sits on the run's residual base, "
                    f"not on the model. Evaluate the run's final/ (saved as a LoRA of the model itself): adapter={run}"
                )
            return candidate
    raise UserError(f"adapter={adapter}: no LoRA adapter there (no adapter_config.json in it or in its final/).")


def _pissa_run_of(checkpoint: Path) -> Path | None:
    """The run folder of a PiSSA run's checkpoint; None for any other adapter."""
    run = next((p for p in checkpoint.parents if (p / "config.yaml").exists()), None)
    if run and OmegaConf.select(OmegaConf.load(run / "config.yaml"), "lora.variant") == "pissa":
        return run
    return None


def refuse_what_vllm_cannot_load(adapter: Path | None) -> None:
    """vLLM serves plain LoRA adapters of rank 512 at most: a DoRA adapter, or a larger one, is refused before an
    engine starts."""
    if not adapter:
        return
    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("use_dora"):
        raise UserError(
            f"adapter={adapter} is a DoRA adapter, which vLLM cannot load. Evaluate it with eval.backend=hf."
        )
    vllm_max_lora_rank(int(config["r"]))


def evaluate(cfg: DictConfig) -> dict:
    identity = run_identity()
    record = RunRecord(identity.run_dir)
    benchmarks = benchmarks_from_config(cfg.eval)
    if not benchmarks:
        raise UserError(
            "No benchmarks to evaluate: choose some, e.g. eval=[reasoning_gym_heldout] or eval=[math500,aime24]."
        )
    adapter = adapter_folder(cfg.adapter)
    record.write_config(saved_config(cfg))
    record.update_summary(
        status="running",
        kind="evaluation",
        overrides=identity.overrides,
        adapter=str(adapter) if adapter else None,
        model={"name": cfg.model.name, "id": cfg.model.id},
        started_at=now_iso(),
        **provenance(),
    )
    started = time.monotonic()
    verifier = make_verifier(cfg.reward)
    try:
        backend = resolve_backend(str(cfg.eval.backend), bool(cfg.generation.get("use_vllm")))
        if backend == "vllm":
            from .generation.vllm_backend import StandaloneVLLMGenerator
            from .policy.models import model_folder

            refuse_what_vllm_cannot_load(adapter)
            folder = model_folder(cfg.model, Path(cfg.paths.cache))
            tokenizer = _tokenizer(folder)
            generator = StandaloneVLLMGenerator(
                cfg.eval, folder, adapter, trust_remote_code=bool(cfg.model.trust_remote_code)
            )
        else:
            from .generation.generators import HFGenerator

            loaded = load_model(cfg.model, cfg.paths.cache, detect_hardware())
            model = loaded.model
            if adapter:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(adapter))
            tokenizer = loaded.tokenizer
            generator = HFGenerator(model, tokenizer, cfg.eval.batch_size)
        trained_on = {p["question"] for p in load_problems(cfg.data)}  # left out of the benchmarks, as in training
        out = record.dir / "eval"
        evaluator = Evaluator(cfg.eval, cfg.prompt, tokenizer, verifier, out, exclude_questions=trained_on)
        results = evaluator.run(generator, "final")
        summary = record.update_summary(
            status="completed",
            backend=backend,
            eval={"final": results},
            metrics=flat_metrics({"final": results}),
            finished_at=now_iso(),
            timings={"total_s": round(time.monotonic() - started, 3)},
        )
        print(f"Run folder: {record.dir}")
        return summary
    except BaseException as err:
        record.update_summary(status="failed", error=str(err)[-4000:], finished_at=now_iso())
        raise
    finally:
        verifier.close()


def _tokenizer(folder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> dict:
    return evaluate(cfg)


if __name__ == "__main__":
    main()
