"""`evaluate.py generate=<run>`: an export's steered completions at each β side by side, through
the bridge or a plain Hugging Face model with its key-value cache (`generation_run`)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM

from interventions.evaluation import export_task, exported_model
from interventions.export import load_intervention
from interventions.generation import generate, generation_flip_accuracy
from interventions.hf import generate as hf_generate
from interventions.io import write_json
from interventions.loggers import finish, log_files
from interventions.metrics import flatten
from interventions.reports.completions import markdown as markdown_completions
from interventions.reports.completions import side_by_side, write_completions
from interventions.rundir import METRICS_FILE
from interventions.runs.record import run_logger
from interventions.spec import GenerateConfig
from interventions.tasks import load_splits
from interventions.tokenizer import model_tokenizer
from interventions.toyworld import is_native_model
from interventions.toyworld.hf_form import hf_form

log = logging.getLogger(__name__)


def hf_generation(iv, model, config: GenerateConfig, prompts: list[str], options: dict) -> list:
    """backend=hf: the completions from the plain Hugging Face model of the export (or
    model.name), with its key-value cache (`interventions.hf.generate`). A TransformerLens-
    native model (the toy world's) generates through its GPT-2 form (`toyworld.hf_form`),
    built from `model`, the bridge already loaded."""
    name = config.model.name or iv.meta["model"]["name"]
    if is_native_model(name):
        plain, tokenizer = hf_form(model), model.tokenizer
    else:
        dtype = getattr(torch, config.model.dtype if config.model.name else iv.meta["model"].get("dtype", "float32"))
        plain = AutoModelForCausalLM.from_pretrained(name, dtype=dtype).to(config.model.device).eval()
        tokenizer = model_tokenizer(name)
    return hf_generate(plain, iv, prompts, tokenizer, config.betas, config.max_new_tokens,
                       check_model=config.check_model, **options)  # fmt: skip


def generation_run(cfg: DictConfig, config: GenerateConfig) -> dict:
    """evaluate.py generate=<...>: completions at each β of `prompts` (or the task split's
    first n prompts) side by side; metrics.json records the settings and, for task prompts,
    the generation flip accuracy."""
    out_dir = Path(config.run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    iv = load_intervention(config.generate)
    model = exported_model(iv, config.model, check=config.check_model)
    options = {"do_sample": config.do_sample, "temperature": config.temperature, "top_k": config.top_k,
               "seed": config.seed, "positions_beyond": config.positions_beyond, "batch_size": config.batch_size}  # fmt: skip
    record = {"source": str(iv.path), "betas": list(config.betas), "max_new_tokens": config.max_new_tokens, **options}
    if config.prompts is not None:
        prompts, where = list(config.prompts), "given prompts"
    else:
        task_spec = export_task(iv, config.task, config.split, config.n)
        task = load_splits(task_spec, model, config.seed, fixed_length=iv.method.position_tied,
                           splits=(config.split,))[config.split]  # fmt: skip
        prompts, where = task.prompts, f"{task_spec.name} template {task_spec.template}, {config.split}"
        record.update(task=asdict(task_spec), split=config.split)
        record[config.split] = generation_flip_accuracy(model, iv.method, task, config.positions_beyond,
                                                        config.batch_size)  # fmt: skip
    if config.backend == "hf":
        completions = hf_generation(iv, model, config, prompts, options)
    else:
        completions = generate(model, iv.method, prompts, config.betas, config.max_new_tokens, **options)
    title = f"{iv.name} from {Path(iv.path).name}: {where}"
    jsonl, md = write_completions(completions, out_dir, title)
    logger = run_logger(config.logger, cfg, out_dir, f"generate-{out_dir.name}")
    try:
        log_files(logger, {}, side_by_side(completions), flatten({k: v for k, v in record.items() if k == config.split},
                                                                 "generate/"), table_key="completions")  # fmt: skip
    finally:
        finish(logger)
    write_json(out_dir / METRICS_FILE, record)
    log.info(f"\n{markdown_completions(completions, title)}\n{jsonl}\n{md}\noutput directory: {out_dir}")
    return record
