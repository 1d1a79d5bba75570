"""The steering score (docs/method.md §11): whether steered text says the target, stays fluent,
and leaves other tasks alone, scored without a judge (the toy world knows every answer, and
the clean model scores fluency).

For each prompt x with answers c (the clean model's) and w, the greedy continuation y_β of T
tokens at β = +b (towards c) and β = -b (towards w), and y_0 at β = 0:

    success_β    y_β begins with the target's tokens (c at +b, w at -b)
    ΔNLL_β       NLL_clean(y_β | x)/T - NLL_clean(y_0 | x)/T, the clean model's per-token
                 negative log-likelihood of the steered continuation minus of its own;
                 fluency = exp(-max(0, ΔNLL_β)); distinct-2 of y_β is reported beside it
    off-target   KL(p_0 ‖ p_β) of the next-token distributions at the last position of other
                 tasks' held-out prompts, mean over prompts; off-target score = exp(-KL)
    score_β      harmonic mean of the success rate, the mean fluency and the off-target score
                 (0 if any is 0); the run's score is the mean of the two directions

b is chosen from `SteeringSpec.betas` on one split (validation) and the score reported on
another (test), with the steerability curve (mean f_c - f_w over `SteeringSpec.curve`) and the
fraction of prompts whose logit difference moves the wrong way from β = 0.

The reference of every difference is the β = 0 copy of the same forward or generation (the
clean model: every hook is the identity at β = 0), and each distinct continuation is scored
once: ΔNLL and the off-target KL are exactly 0 at β = 0, and ΔNLL is exactly 0 wherever the
steered text is the clean text.

Position-tied methods act on other tasks' prompts with their grid aligned to each prompt's
end (docs/method.md §7: the last trained position on the last prompt token), so that the
parameters that move the read position of their own task move that of the other task.

    >>> found = steering_metrics(module, dm.tasks["val"], dm.tasks["test"], dm.datasets["test"], SteeringSpec())
    >>> found["steering_score"], found["steering"]["beta"]
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack

import torch

from interventions.forward import positions_of
from interventions.generation import generate_tokens, left_padded
from interventions.models import model_device
from interventions.objective import kl_to_clean, score_diff
from interventions.sites import hook
from interventions.spec import SteeringSpec
from interventions.tasks import load_task
from interventions.tasks.datapoint import Task
from interventions.tasks.tokenize import prompt_token_ids
from interventions.tasks.validation import answer_ids

ROWS = 512  # rows per forward (prompts × βs): bounds the activations held at once
DIRECTIONS = {"pos": 1.0, "neg": -1.0}  # +b steers towards the correct answer, -b towards the wrong one


# -- the score's parts, on tensors --------------------------------------------------------------


def harmonic_mean(values: list[float]) -> float:
    """n / Σ 1/v over non-negative values; 0 if any is 0 (AxBench's combination)."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def fluency_scores(nll: torch.Tensor, clean_nll: torch.Tensor) -> torch.Tensor:
    """[N] exp(-max(0, ΔNLL)) from per-token NLLs [N] of the steered and the clean continuation."""
    return torch.exp(-torch.relu(nll - clean_nll))


def distinct_2(tokens: torch.Tensor) -> torch.Tensor:
    """[N] distinct bigrams / bigrams of each continuation tokens [N, T] (T >= 2): 1 when no
    bigram repeats, 1/(T-1) for one token repeated."""
    pairs = tokens.shape[1] - 1
    return torch.tensor([len(set(zip(row[:-1], row[1:]))) / pairs for row in tokens.tolist()], dtype=torch.float64)


def starts_with(tokens: torch.Tensor, answers: list[list[int]]) -> torch.Tensor:
    """[N] bool: continuation n (tokens [N, T]) begins with all of answers[n]'s tokens."""
    return torch.tensor([row[: len(a)] == a for row, a in zip(tokens.tolist(), answers)])


def wrong_way(ld: torch.Tensor, ld_zero: torch.Tensor, beta: float) -> torch.Tensor:
    """[N] bool: the logit difference ld [N] at `beta` moved from ld_zero [N] against β's sign
    (down at β > 0, up at β < 0); never at β = 0."""
    return (ld - ld_zero) * math.copysign(1.0, beta) < 0 if beta != 0 else torch.zeros_like(ld, dtype=torch.bool)


def direction_parts(tokens: torch.Tensor, nll: torch.Tensor, clean_nll: torch.Tensor, targets: list[list[int]],
                    off_target_kl: torch.Tensor) -> dict[str, float]:  # fmt: skip
    """One direction's parts from its continuations [N, T], their per-token NLL [N], the clean
    continuations' [N], the target answers and the off-target KLs [M]."""
    success = float(starts_with(tokens, targets).double().mean())
    fluency = float(fluency_scores(nll, clean_nll).mean())
    kl = float(off_target_kl.double().mean())
    off_target = math.exp(-kl)
    return {"score": harmonic_mean([success, fluency, off_target]), "success": success, "fluency": fluency,
            "delta_nll": float((nll - clean_nll).mean()), "distinct_2": float(distinct_2(tokens).mean()),
            "off_target_kl": kl, "off_target": off_target}  # fmt: skip


# -- what the model does at each β --------------------------------------------------------------


def _pad_id(model) -> int:
    pad = getattr(model.tokenizer, "pad_token_id", None)
    return 0 if pad is None else pad


def chunks(items: list, copies: int = 1):
    """`items` in runs of at most ROWS // copies (each item runs `copies` times in a forward)."""
    size = max(1, ROWS // copies)
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def continuation_nll(model, ids: list[list[int]], tokens: torch.Tensor) -> torch.Tensor:
    """[R] the clean model's per-token NLL, -(1/T) Σ_t log σ(f(x ⊕ y_<t))_{y_t}, of each
    continuation tokens [R, T] after prompt ids[r % len(ids)] (rows: β-major copies of the
    prompts). Each distinct (prompt, continuation) is scored once, so equal texts get equal
    values to the bit."""
    width = tokens.shape[1]
    pairs = [(tuple(ids[r % len(ids)]), tuple(row)) for r, row in enumerate(tokens.tolist())]
    unique = list(dict.fromkeys(pairs))
    device = model_device(model)

    def keep_read(resid: torch.Tensor, hook) -> torch.Tensor:  # the positions predicting y_1..y_T
        return resid[:, -width - 1 : -1]

    values = {}
    with model.hooks(fwd_hooks=[(hook("unembed_in"), keep_read)]):
        for chunk in chunks(unique):
            input_ids, mask = (t.to(device) for t in left_padded([list(x) + list(y) for x, y in chunk], _pad_id(model)))
            logits = model(input_ids) if bool(mask.all()) else model(input_ids, attention_mask=mask)
            target = torch.tensor([y for _, y in chunk], device=device)
            logp = torch.log_softmax(logits.float(), -1).gather(-1, target[..., None])[..., 0]
            values.update(zip(chunk, (-logp.double().mean(-1)).tolist()))
    return torch.tensor([values[p] for p in pairs], dtype=torch.float64)


def end_aligned_positions(mask: torch.Tensor, trained: int) -> torch.Tensor:
    """[B, W] positions of a position-tied grid of `trained` positions aligned to each row's
    end: the last real token is position trained - 1; -1 at padding and before the grid."""
    aligned = positions_of(mask) + (trained - mask.sum(1, keepdim=True))
    return torch.where(mask.bool() & (aligned >= 0), aligned, -1)


@torch.no_grad()
def off_target_kl(model, method, ids: list[list[int]], betas: tuple[float, ...]) -> torch.Tensor:
    """[len(betas), M] KL(p_0 ‖ p_β) of the next-token distribution at the last position of
    each prompt (token ids `ids`, any lengths), with `method` at each β (betas[0] must be 0:
    the reference, run in the same forward)."""
    device = model_device(model)
    trained = method.grid.seq_len if method.position_tied else None
    out = []
    for chunk in chunks(ids, len(betas)):
        input_ids, mask = left_padded(chunk, _pad_id(model))
        positions = end_aligned_positions(mask, trained) if trained else positions_of(mask)
        input_ids, mask = input_ids.to(device).repeat(len(betas), 1), mask.to(device).repeat(len(betas), 1)
        beta = torch.tensor(betas, device=device).repeat_interleave(len(chunk))

        def keep_last(resid: torch.Tensor, hook) -> torch.Tensor:
            return resid[:, -1:]

        with ExitStack() as stack:
            see = stack.enter_context(method.track_positions())
            stack.enter_context(model.hooks(fwd_hooks=[*method.hooks(beta), (hook("unembed_in"), keep_last)]))
            see(positions.to(device))
            logits = model(input_ids, attention_mask=mask)[:, -1].float().view(len(betas), len(chunk), -1)
        out.append(torch.stack([kl_to_clean(logits[0], torch.log_softmax(row, -1)) for row in logits]))
    return torch.cat(out, 1).cpu()


@torch.no_grad()
def logit_differences(module, loader, betas: tuple[float, ...]) -> torch.Tensor:
    """[len(betas), N] f_c - f_w (s(c) - s(w) for answers of several tokens) of every data point
    of `loader` at each β, from `module.steered` (`training.module.InterventionModule`)."""
    out = []
    for batch in loader:
        batch = {k: v.to(module.device) for k, v in batch.items()}
        logits, tails = module.steered(batch, betas)
        out.append(torch.stack([score_diff(f, batch["correct"], batch["wrong"], t) for f, t in zip(logits, tails)]))
    return torch.cat(out, 1).double().cpu()


# -- the score ---------------------------------------------------------------------------------


def off_target_prompts(spec: SteeringSpec, task: str, splits=("val", "test"), seed: int = 0) -> dict[str, list[str]]:
    """{split: prompts}: up to `spec.n_off_target` held-out prompts of each other task
    (`SteeringSpec.off_target_tasks`), every template, per split."""
    names = spec.off_target_tasks(task)
    return {split: [p for name in names for p in load_task(name, split=split, template="all", n=spec.n_off_target,
                                                           seed=seed).prompts] for split in splits}  # fmt: skip


@torch.no_grad()
def scored_directions(model, method, task: Task, off_target: list[str], magnitudes, max_new_tokens: int,
                      clock: dict | None = None) -> dict[float, dict]:  # fmt: skip
    """{b: {"pos": parts at +b, "neg": parts at -b, "clean": {"distinct_2": of y_0}}}
    (`direction_parts`) on `task`'s prompts, the off-target KL on `off_target` prompts; every
    β in one generation (β = 0 first: the reference). `clock` ({"generation": s}) accumulates
    the seconds spent generating."""
    betas = tuple(dict.fromkeys((0.0, *(sign * b for b in magnitudes for sign in DIRECTIONS.values()))))  # 0.0 == -0.0
    tokenizer = model.tokenizer
    targets = {"pos": [answer_ids(tokenizer, p.correct) for p in task], "neg": [answer_ids(tokenizer, p.wrong) for p in task]}
    width = max(max_new_tokens, *(len(a) for a in targets["pos"] + targets["neg"]))
    ids = prompt_token_ids(model, task.prompts)
    started = time.perf_counter()
    tokens = torch.cat([generate_tokens(model, method, chunk, betas, width).cpu() for chunk in chunks(ids, len(betas))], 1)
    if clock is not None:
        clock["generation"] = clock.get("generation", 0.0) + time.perf_counter() - started
    nll = continuation_nll(model, ids, tokens.flatten(0, 1)).view(len(betas), len(ids))
    kl = off_target_kl(model, method, prompt_token_ids(model, off_target), betas)
    row = {beta: k for k, beta in enumerate(betas)}
    clean = {"distinct_2": float(distinct_2(tokens[0]).mean())}
    return {b: {"clean": clean, **{name: direction_parts(tokens[row[sign * b]], nll[row[sign * b]], nll[0], targets[name],
                                                         kl[row[sign * b]]) for name, sign in DIRECTIONS.items()}}
            for b in magnitudes}  # fmt: skip


def steering_metrics(module, select: Task, report: Task, report_data, spec: SteeringSpec, seed: int = 0,
                     off_target: dict[str, list[str]] | None = None, clock: dict | None = None) -> dict:  # fmt: skip
    """The steering score of `module.method` on `report` at the |β| that scores best on
    `select` (module docstring), with its parts per direction, the selection, the
    steerability curve and the wrong-way fractions.

    Args:
        module: an `InterventionModule` (its model, method and `steered`).
        select: the split choosing b (validation).
        report: the split reported (test).
        report_data: `report` encoded (`TaskDataModule.datasets[split]`), for the logit differences.
        seed: which other tasks' prompts (`off_target_prompts`), unless `off_target` gives
            them: {split name: prompts} for both splits.
        clock: if given, gets "generation" and "total" seconds.

    Returns:
        {"steering_score": float, "steering": {...}}: numbers only (metrics.json, loggers).
    """
    started = time.perf_counter()
    model, method = module.model, module.method
    if off_target is None:
        off_target = off_target_prompts(spec, report.name, (select.split, report.split), seed)
    chosen = scored_directions(model, method, select, off_target[select.split], spec.betas, spec.max_new_tokens, clock)
    selection = {b: (parts["pos"]["score"] + parts["neg"]["score"]) / 2 for b, parts in chosen.items()}
    beta = max(selection, key=lambda b: (selection[b], -b))  # ties: the smaller |β|
    parts = scored_directions(model, method, report, off_target[report.split], [beta], spec.max_new_tokens, clock)[beta]
    curve = tuple(sorted({0.0, beta, -beta, *spec.curve}))
    ld = logit_differences(module, report_data.loader(max(1, ROWS // len(curve))), curve)
    at = {b: ld[k] for k, b in enumerate(curve)}
    moved = {name: wrong_way(at[sign * beta], at[0.0], sign * beta) for name, sign in DIRECTIONS.items()}
    found = {
        "beta": beta, "score": (parts["pos"]["score"] + parts["neg"]["score"]) / 2,
        **{f"{key}_{name}": value for name, values in parts.items() for key, value in values.items()},
        "wrong_way": float((moved["pos"] | moved["neg"]).double().mean()),
        **{f"wrong_way_{name}": float(value.double().mean()) for name, value in moved.items()},
        "selection": {f"{b:g}": score for b, score in selection.items()},
        "curve": {f"{b:g}": {"logit_diff": float(at[b].mean()), "wrong_way": float(wrong_way(at[b], at[0.0], b).double().mean())}
                  for b in spec.curve},  # fmt: skip
        "n": len(report), "n_off_target": len(off_target[report.split]),
    }  # fmt: skip
    if clock is not None:
        clock["total"] = clock.get("total", 0.0) + time.perf_counter() - started
    return {"steering_score": found.pop("score"), "steering": found}
