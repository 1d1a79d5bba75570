"""What each command of `python -m interventions` does (its options: `cli.commands`).

Each function takes the parsed arguments, does the work through the library and prints
where the results went; a user mistake raises an InterventionsError, which the command
line prints as one line.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch

from interventions.controlvector import read_control_vector, write_control_vector
from interventions.errors import CancellingObservableError, ExportError
from interventions.export import load_intervention
from interventions.io import save_figure, write_json
from interventions.reports.obsprop import write_report
from interventions.loggers import finish, log_files, make_logger
from interventions.metrics import flatten
from interventions.models import load_model
from interventions.obsprop.analysis import analyze, cosine, grid_list, head_attributions, rank_correlation
from interventions.obsprop.features import path_feature
from interventions.obsprop.layernorm import ActivationData
from interventions.obsprop.observables import Observable, observable_for_task
from interventions.reports import geometry as geometry_report
from interventions.reports import heads as heads_report
from interventions.reports import illusion as illusion_report
from interventions.reports.illusion_files import format_illusion, write_illusion
from interventions.reports.generalization import generalization as generalization_table
from interventions.reports.generalization import markdown, write_generalization
from interventions.reports.task_matrix import task_matrix as task_matrix_of
from interventions.reports.task_matrix import write_task_matrix
from interventions.methods.registry import intervention_spec
from interventions.spec import ModelSpec, ObjectiveSpec, RunSpec
from interventions.tasks import load_task
from interventions.tasks.datamodule import encode
from interventions.tasks.mixed import write_mixed_task
from interventions.toyworld import CHECKPOINT, TRAINING_DEFAULTS
from interventions.reports.toy_behaviour import behaviour_report, format_report
from interventions.rundir import check_writable
from interventions.toyworld.train import train as train_toy
from interventions.training.train import train_intervention

log = logging.getLogger(__name__)


def toyworld_train(args) -> int:
    if (Path(args.out) / "model.safetensors").exists():
        raise ExportError(f"--out {args.out} already holds a checkpoint (model.safetensors); choose a new folder")
    summary = train_toy(args.out, **{key: getattr(args, key) for key in TRAINING_DEFAULTS})
    print(json.dumps(summary, indent=2))
    if not args.no_report:
        print(format_report(behaviour_report(args.out)))
    return 0


def toyworld_report(args) -> int:
    report = behaviour_report(args.checkpoint or CHECKPOINT)
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return 0


def default_observable(task, tokenizer) -> tuple[Observable, str | None]:
    """The task's observable, or, when its answer pairs cancel out (pronouns), its most common
    pair as first seen, with a note saying so."""
    try:
        return observable_for_task(task, tokenizer), None
    except CancellingObservableError:
        pass
    top = Counter(frozenset((p.correct, p.wrong)) for p in task).most_common(1)[0][0]
    first = next(p for p in task if frozenset((p.correct, p.wrong)) == top)
    obs = Observable.from_pair(tokenizer, first.correct, first.wrong)
    return obs, (f"note: the task's answer pairs cancel out on average; using its most common pair {obs.label!r} "
                 "(pass --observable to choose)")  # fmt: skip


def _attributions(report: dict, model, observables, enc: dict, ln_mode: str) -> None:
    """Each head's measured direct contribution on the task's prompts, next to its feature norm."""
    for o in observables:
        contrib = head_attributions(model, o, enc["input_ids"], enc["attention_mask"], enc["last_index"])
        rms = contrib.pow(2).mean(0).sqrt()
        norms = report["_tensors"][o.label][ln_mode].norm(dim=-1)
        report["observables"][o.label]["attribution"] = {
            "what": "direct contribution of each head to n·logits at the last position (frozen ln_final scale)",
            "rms": grid_list(rms), "mean": grid_list(contrib.mean(0)),
            "spearman_with_feature_norm": round(rank_correlation(rms, norms), 4),
        }  # fmt: skip


def _paths(model, specs, observables, ln_mode: str, data) -> list[dict]:
    """Virtual-head path features for each path spec ("L3H1,L1H0"), per observable."""
    out = []
    for spec in specs:
        comps = [c for c in spec.split(",") if c.strip()]
        entry, vecs = {"path": comps}, {}
        for o in observables:
            pf = path_feature(model, comps, o, ln_mode=ln_mode, data=data, input_space="normalized")
            vecs[o.label] = pf.vector
            entry[f"norm {o.label}"] = round(float(pf.vector.norm()), 6)
            for name, m in pf.mlp.items():
                entry[f"{name} |g(x0)| {o.label}"] = abs(m.value)
        if len(observables) == 2:
            entry["cosine"] = round(float(cosine(*(vecs[o.label] for o in observables))), 6)
        out.append(entry)
    return out


def obsprop_analyze(args) -> int:
    model, tokenizer = load_model(args.model, device=args.device)
    task = load_task(args.task, model=model, split=args.split, template=args.template, n=args.n, seed=args.seed,
                     path=args.task_path, bias_pair=args.bias_pair)  # fmt: skip
    obs, note = (Observable.parse(args.observable, tokenizer), None) if args.observable else default_observable(task, tokenizer)
    if note:
        log.warning(note)
    other = Observable.parse(args.other_observable, tokenizer) if args.other_observable else None
    observables = [obs] + ([other] if other else [])
    enc = encode(model, task)
    data = ActivationData.collect(model, enc["input_ids"], enc["attention_mask"], enc["last_index"], seed=args.seed)
    with torch.no_grad():
        report = analyze(model, obs, other, data=data, ln_modes=("ignore", args.ln_mode), top=args.top,
                         mlp=not args.no_mlp)  # fmt: skip
    _attributions(report, model, observables, enc, args.ln_mode)
    report["data"] = {"task": args.task, "template": str(args.template), "split": args.split, "n": len(task),
                      "seed": args.seed, "model": args.model}  # fmt: skip
    if args.path:
        report["paths"] = _paths(model, args.path, observables, args.ln_mode, data)
    files = write_report(report, args.out)
    _print_obsprop(report)
    print(f"wrote {len(files)} files to {Path(args.out)}")
    if args.logger != "none":
        _obsprop_to_wandb(args, report)
    return 0


def _obsprop_to_wandb(args, report: dict) -> None:
    """The PNG heatmaps as images and every number of the report as W&B summary values."""
    out = Path(args.out)
    logger = make_logger("wandb", out, name=f"obsprop-{args.task}", config=vars(args))
    numbers = {k: v for k, v in flatten(report).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    try:
        log_files(logger, {p.stem: p for p in sorted(out.glob("*.png"))}, None, numbers)
    finally:
        finish(logger)


def _print_obsprop(report: dict) -> None:
    main = report["main_mode"]
    for label, rep in report["observables"].items():
        heads_ = ", ".join(f"L{h['layer']}H{h['head']} {h['norm']:.4g}" for h in rep["ranking"][main])
        print(f"top heads by ‖y‖ for {label} ({main} LN, normalised input): {heads_}")
        if "attribution" in rep:
            print(f"  Spearman(‖y‖, RMS direct contribution on data) = {rep['attribution']['spearman_with_feature_norm']:+.3f}")
    pair = report.get("pair")
    if pair:
        a, b = pair["first"], pair["second"]
        print(f"cos(W_U n_{a}, W_U n_{b}) = {pair['cosine_of_W_U_n']:.4f}")
        for h in pair["top_heads"]:
            print(f"  L{h['layer']}H{h['head']}: cos {h['cosine']:+.4f}  C({a}->{b}) {h[f'coupling {a} -> {b}']:+.4f}"
                  f"  C({b}->{a}) {h[f'coupling {b} -> {a}']:+.4f}")  # fmt: skip


def _template(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def _splits(args, model, path=None) -> tuple:
    """The train and test tasks of a training command's options."""
    common = dict(model=model, template=_template(args.template), path=path, fixed_length=True, seed=args.seed)
    return (load_task(args.task, split="train", n=args.n_train, **common),
            load_task(args.task, split="test", n=args.n_test, **common))  # fmt: skip


def heads(args) -> int:
    model, _ = load_model(args.model)
    train, test = _splits(args, model)
    result = heads_report.head_study(model, train, test, RunSpec(epochs=args.epochs, seed=args.seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "heads.json", result)
    save_figure(heads_report.plot(result, f"{args.task}: ActivScalar on o vs DLA (ρ = {result['spearman']:.2f})"),
                out / "heads.png")  # fmt: skip
    print(f"Spearman ρ = {result['spearman']:.3f}, Kendall τ = {result['kendall']:.3f}; written to {out}")
    return 0


def geometry(args) -> int:
    torch.set_num_threads(1)
    model, _ = load_model(args.model)
    train, test = _splits(args, model, args.path)
    result = geometry_report.geometry_study(
        model, train, test, n_seeds=args.n_seeds, data_split=args.data_split,
        intervention=intervention_spec("steervec", sites=args.sites, layers=args.layers, positions=args.positions,
                                       lr=args.lr),
        objective=ObjectiveSpec(lambda_f=args.lambda_f, lambda_m=args.lambda_m, margin=args.margin),
        run=RunSpec(epochs=args.epochs, batch_size=args.batch_size),
    )  # fmt: skip
    result["config"] = dict(vars(args))
    written = geometry_report.write_geometry(args.out, result)
    tau = geometry_report.PAPER_TAU
    print(geometry_report.tau_line(result) + f"  (Kendall, mean over {len(result['kendall_tau']['pairs']['norm'])} seed pairs; "
          f"paper: norm {tau['norm']}, direction {tau['direction']})")  # fmt: skip
    print(f"  mean pairwise cosine between the seeds' vectors, averaged over locations: "
          f"{result['vector_cosine']['mean']:.3f}")  # fmt: skip
    for m in result["metrics"]:
        print(f"  seed {m['seed']}: effectiveness {m['effectiveness']:.3f}, flip accuracy {m['flip_accuracy']:.3f}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def illusion(args) -> int:
    torch.set_num_threads(1)
    model, _ = load_model(args.model)
    train, test = _splits(args, model)
    trained = train_intervention(model, train, test, intervention=intervention_spec("steervec", sites=args.sites, lr=args.lr), run=RunSpec(epochs=args.epochs, seed=args.seed))  # fmt: skip
    report = illusion_report.diagnose_illusion(model, trained.method, trained.datamodule.loader(args.split),
                                        max_prompts=args.max_prompts)  # fmt: skip
    report["metrics"] = trained.evaluate(args.split)
    report["config"] = dict(vars(args))
    write_illusion(Path(args.out) / "illusion.json", report)
    print(format_illusion(report))
    return 0


def generalization(args) -> int:
    summary = generalization_table(args.runs, templates=args.templates, split=args.split, n=args.n,
                                   model=ModelSpec(name=None, device=args.device))  # fmt: skip
    json_path, md_path = write_generalization(summary, args.out)
    print(f"\n{markdown(summary)}\n{json_path}\n{md_path}")
    return 0


def task_matrix(args) -> int:
    matrix = task_matrix_of(args.runs, n=args.n, split=args.split, device=args.device)
    for path in write_task_matrix(matrix, args.out):
        print(path)
    return 0


def write_mixed(args) -> int:
    check_writable(Path(args.out), "DIR")  # before the model loads
    path = write_mixed_task(args.out, model=load_model("toy")[0])
    print(f"wrote the mixed toy tasks; train on them with\n  python train.py intervention=dynscalar "
          f"task=jsonl 'task.path=\"{path}\"'")  # fmt: skip
    return 0


def control_vector(args) -> int:
    """Write the run's vectors as a llama.cpp control vector and say what the file holds."""
    check_writable(Path(args.out).parent, "OUT.gguf")
    path = write_control_vector(load_intervention(args.run), args.out, args.model_hint, args.scale)
    found = read_control_vector(path)
    layers = ", ".join(f"direction.{n}" for n in sorted(found["directions"]))
    log.info(f"{path}: {found['layer_count']} vectors ({layers}), model hint {found['model_hint']!r}; "
             f"llama-cli --control-vector {path} adds them to those layers' outputs at every token")  # fmt: skip
    return 0
