"""A planted circuit in a realistic model: the toy world's model fine-tuned so that toy IOI
(template 0) is carried by a chosen set of nodes, in the spirit of InterpBench's strict
interchange-intervention training (docs/circuits.md).

    python -m interventions circuits plant --out DIR [--steps 1500]

The chosen circuit (`CIRCUIT`): heads L1H2 and L3H2 at the head granularity; attnOut_1,
attnOut_3 and mlpOut_0 at the site granularity (the layers of those heads, and the first
MLP, which the toy model uses as part of its token embedding). Every weight of the model is
trained on the sum of
- the toy corpus' next-token loss (it stays a language model),
- IOI's cross-entropy on the correct name, clean and with every node *outside* the circuit
  ablated (at each granularity; zero, mean or resample ablation, drawn per step), and the
  ablated logit difference's squared distance to the clean one,
- the squared logit difference f_c − f_w with every node *of* the circuit ablated (zero or
  mean ablation): without the circuit the model must not prefer either name.
The result is checked, not assumed: `benchmarks.verify` ablates the circuit and its
complement on the IOI prompts, and truth.json records the figures.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from interventions.circuits.ablation import ablation_hooks, mean_activations, targets
from interventions.circuits.benchmarks import PLANTED
from interventions.circuits.granularity import GRANULARITIES
from interventions.forward import last_position_logits
from interventions.io import read_json, write_json
from interventions.models import load_toy
from interventions.objective import logit_diff
from interventions.tasks import load_task
from interventions.tasks.datamodule import encode
from interventions.toyworld import CHECKPOINT
from interventions.toyworld.train import next_token_loss, optimizer_and_schedule, sentence_batches, take_step, tokenized_corpus

CIRCUIT = {"head": ["L1H2", "L3H2"], "site": ["attnOut_1", "attnOut_3", "mlpOut_0"]}
DATA = {"template": 0, "n": {"train": 256, "val": 64, "test": 256}}
KEEP = ("zero", "mean", "resample")  # the ablations the outside of the circuit is trained to survive
MEANS_EVERY = 50  # steps between two computations of the prompts' mean activations
DEFAULTS = {"steps": 1500, "batch_size": 16, "lr": 1e-3, "seed": 0}
DERIVATION = (
    "planted by training (interventions.circuits.planted): every weight of the toy model fine-tuned on the toy "
    "corpus and on IOI template 0 with the nodes outside the circuit ablated (zero, mean or resample) and the "
    "answer kept, and with the circuit ablated and the two names made equally likely; checked by zero and mean "
    "ablation on the benchmark's prompts (check)."
)


def _nodes(model) -> dict[str, list[str]]:
    cfg = model.cfg
    return {level: GRANULARITIES[level].nodes(cfg.n_layers, cfg.n_heads, 0) for level in CIRCUIT}


def plant_loss(model, batch: dict, tokens: torch.Tensor, mask: torch.Tensor, nodes: dict, means: dict,
               rng: random.Random) -> torch.Tensor:  # fmt: skip
    """The training loss of one step (module docstring) on an IOI batch and a corpus batch
    (tokens [B, T], loss mask [B, T-1]); `means`: the IOI prompts' mean activations."""
    lm = next_token_loss(model, tokens, mask)
    order = torch.randperm(len(batch["input_ids"]))

    def ioi_logits(hooks=()):
        return last_position_logits(model, batch["input_ids"], None, batch["last_index"], fwd_hooks=list(hooks))

    clean = ioi_logits()
    clean_ld = logit_diff(clean, batch["correct"], batch["wrong"]).detach()
    loss = lm + F.cross_entropy(clean, batch["correct"])
    for level, circuit in CIRCUIT.items():
        rest = [n for n in nodes[level] if n not in circuit]
        kept = ioi_logits(ablation_hooks(rest, GRANULARITIES[level], rng.choice(KEEP), means, order))
        # the answer, and as strongly as the whole model gives it
        loss = loss + F.cross_entropy(kept, batch["correct"])
        loss = loss + 0.1 * (logit_diff(kept, batch["correct"], batch["wrong"]) - clean_ld).pow(2).mean()
        gone = ioi_logits(ablation_hooks(circuit, GRANULARITIES[level], rng.choice(("zero", "mean")), means))
        loss = loss + logit_diff(gone, batch["correct"], batch["wrong"]).pow(2).mean()
    return loss


def plant(out: str | Path, steps: int = DEFAULTS["steps"], batch_size: int = DEFAULTS["batch_size"],
          lr: float = DEFAULTS["lr"], seed: int = DEFAULTS["seed"], progress: bool = True) -> Path:  # fmt: skip
    """Fine-tune the toy model into `out`/planted_ioi/ (module docstring); returns the folder.
    truth.json holds the circuit and the training settings (`benchmarks.verify` adds the check)."""
    started = time.time()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = load_toy(CHECKPOINT)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    tokenizer = model.tokenizer
    _, token_lists = tokenized_corpus(tokenizer, steps * batch_size // 2, seed)
    corpus = sentence_batches(token_lists, batch_size, tokenizer.pad_token_id, torch.Generator().manual_seed(seed))
    ioi = encode(model, load_task("ioi", model, split="train", template=DATA["template"], n=DATA["n"]["train"]),
                 fixed_length=True)  # fmt: skip
    optimizer, scheduler = optimizer_and_schedule(model, lr, 0.01, steps // 20, steps)
    nodes, losses = _nodes(model), []
    names = sorted({name for level in CIRCUIT for node in nodes[level] for name, _, _ in targets(node, GRANULARITIES[level])})
    for step in tqdm(range(steps), desc="planting", disable=not progress):
        if step % MEANS_EVERY == 0:  # the mean ablation of the check: over all the prompts, as the model is now
            means = mean_activations(model, ioi, names)
        rows = torch.randint(len(ioi["input_ids"]), (batch_size,))
        batch = {k: ioi[k][rows] for k in ("input_ids", "last_index", "correct", "wrong")}
        losses.append(take_step(model, optimizer, scheduler, plant_loss(model, batch, *next(corpus), nodes, means, rng)))
    target = Path(out) / PLANTED
    target.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(target / "model.safetensors"))
    tokenizer.save_pretrained(str(target))
    write_json(target / "config.json", read_json(Path(CHECKPOINT) / "config.json"))
    record = {
        "benchmark": PLANTED, "kind": "planted", "description": "toy IOI carried by two chosen heads (and the first MLP)",
        "seq_len": int(ioi["input_ids"].shape[1]), "truth": CIRCUIT, "derivation": DERIVATION, "data": DATA,
        "training": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                     "final_loss": sum(losses[-100:]) / len(losses[-100:]), "seconds": round(time.time() - started, 1)},
    }  # fmt: skip
    write_json(target / "truth.json", record)
    return target

