"""A tracr-compiled program (`circuits.programs`) as this project's native checkpoint, and the
ground truth its weights give.

The conversion (what TransformerLens's own tracr demo does for its older HookedTransformer,
written here for `TransformerBridge.boot_native`): no normalisation, ReLU MLPs, attention in
both directions (tracr compiles non-causal attention), learned absolute positions. tracr's
residual stream, embeddings, attention (query, key, value, output: haiku's [in, out] weights,
transposed) and MLP weights are copied as they are. The vocabulary is one word-level
tokenizer over the program's input tokens and its output values as words (`<bos>` for
tracr's BOS, `<pad>` for its padding); the unembedding reads the residual dimensions of the
output space (tracr: one-hot) onto the output values' tokens, times `LOGIT_SCALE`, so a
logit difference of the right answer over another is 10 rather than tracr's 1 (the argmax,
the program's output, is unchanged).

Ground truth (`truth`): a component is used when its weights are not all zero: an attention
head when its value and output weights both write something, an MLP when its output
projection does. tracr leaves the blocks and heads a program does not need at exactly zero,
and every component it fills feeds the program's output. Whether ablating them does what
the truth says is checked on the benchmark's data (`circuits.ablation`).

This module needs numpy and torch only: it reads an assembled model's attributes, and the
committed checkpoints load without JAX.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from interventions.circuits.granularity import GRANULARITIES, position_node
from interventions.circuits.programs import LENGTH, balanced_inputs, records, word
from interventions.io import atomic_write_text, write_json
from interventions.models import load_toy
from interventions.toyworld.tokenizer import SPECIAL_TOKENS, build_tokenizer

LOGIT_SCALE = 10.0
EXTRA_POSITIONS = 1
TRACR_BOS, TRACR_PAD = "BOS", "compiler_pad"  # what `circuits.rasp` names them for tracr
BOS, PAD = "<bos>", "<pad>"


def _array(params: dict, name: str, part: str) -> np.ndarray:
    return np.asarray(params[name][part], dtype=np.float32)


def _word_order(w: str):
    """Numbers in numeric order, then the other words."""
    number = w.lstrip("-").isdigit()
    return (not number, int(w) if number else 0, w)


def convert(assembled, name: str, output: str) -> tuple[dict, dict, list[str]]:
    """(state dict, native config, vocabulary) of a tracr `AssembledTransformerModel` whose
    program's output SOp is labelled `output` (its residual directions are `output:value`)."""
    params, cfg = assembled.params, assembled.model_config
    inputs = dict(assembled.input_encoder.encoding_map)
    outputs = assembled.output_encoder.encoding_map
    words = sorted({word(v) for v in inputs if v not in (TRACR_BOS, TRACR_PAD)} | {word(v) for v in outputs}, key=_word_order)
    vocab = [*SPECIAL_TOKENS, *words]
    index = {w: i for i, w in enumerate(vocab)}
    token_embed, pos_embed = _array(params, "token_embed", "embeddings"), _array(params, "pos_embed", "embeddings")
    # one position more than the program's inputs, at zero: the contrastive methods (DiffMean,
    # PCA) read the answer appended to a prompt
    pos_embed = np.concatenate([pos_embed, np.zeros((EXTRA_POSITIONS, pos_embed.shape[1]), dtype=np.float32)])
    d_model = token_embed.shape[1]
    embed = np.zeros((len(vocab), d_model), dtype=np.float32)
    for value, row in inputs.items():
        embed[index[BOS if value == TRACR_BOS else PAD if value == TRACR_PAD else word(value)]] = token_embed[row]
    labels = list(assembled.residual_labels)
    unembed = np.zeros((len(vocab), d_model), dtype=np.float32)
    for value in outputs:
        unembed[index[word(value)], labels.index(f"{output}:{value}")] = LOGIT_SCALE
    state = {"embed.weight": embed, "pos_embed.weight": pos_embed, "unembed.weight": unembed,
             "unembed.bias": np.zeros(len(vocab), dtype=np.float32)}  # fmt: skip
    for layer in range(cfg.num_layers):
        attn, mlp = f"transformer/layer_{layer}/attn/", f"transformer/layer_{layer}/mlp/"
        for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "linear")):
            state[f"blocks.{layer}.attn.{ours}.weight"] = _array(params, attn + theirs, "w").T
            state[f"blocks.{layer}.attn.{ours}.bias"] = _array(params, attn + theirs, "b")
        for ours, theirs in (("in", "linear_1"), ("out", "linear_2")):
            state[f"blocks.{layer}.mlp.{ours}.weight"] = _array(params, mlp + theirs, "w").T
            state[f"blocks.{layer}.mlp.{ours}.bias"] = _array(params, mlp + theirs, "b")
    config = {
        "d_model": d_model, "n_layers": cfg.num_layers, "n_heads": cfg.num_heads, "d_head": cfg.key_size,
        "d_mlp": cfg.mlp_hidden_size, "n_ctx": pos_embed.shape[0], "d_vocab": len(vocab), "act_fn": "relu",
        "normalization_type": None, "positional_embedding_type": "standard", "attention_dir": "bidirectional",
    }  # fmt: skip
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, config, vocab


def truth(state: dict, config: dict) -> dict[str, list[str]]:
    """The components the compiled program uses, from its weights: {"site": ["attnOut_0",
    "mlpOut_1", ...], "head": ["L0H1", ...]} (module docstring)."""
    n_heads, d_head = config["n_heads"], config["d_head"]
    sites, heads = [], []
    for layer in range(config["n_layers"]):
        W_V = state[f"blocks.{layer}.attn.v.weight"].view(n_heads, d_head, -1)
        W_O = state[f"blocks.{layer}.attn.o.weight"].view(-1, n_heads, d_head)
        used = [bool(W_V[h].any() and W_O[:, h].any()) for h in range(n_heads)]
        heads += [f"L{layer}H{h}" for h, u in enumerate(used) if u]
        if any(used):
            sites.append(f"attnOut_{layer}")
        if bool(state[f"blocks.{layer}.mlp.out.weight"].any() or state[f"blocks.{layer}.mlp.out.bias"].any()):
            sites.append(f"mlpOut_{layer}")
    return {"site": sites, "head": heads}


def position_truth(sites: list[str], everywhere: tuple[str, ...], seq_len: int) -> list[str]:
    """(layer, position) nodes: a used component's layer at the last position, and at every
    token position (not the <bos>) for a component in `everywhere` (`programs.Program`)."""
    nodes = {position_node(int(s.rsplit("_", 1)[1]), seq_len - 1) for s in sites}
    nodes |= {position_node(int(s.rsplit("_", 1)[1]), p) for s in sites if s in everywhere for p in range(1, seq_len)}
    return sorted(nodes)


def write_checkpoint(folder: str | Path, state: dict, config: dict, vocab: list[str], data: list[dict]) -> Path:
    """model.safetensors, config.json, the tokenizer and data.jsonl (`programs.records`) in
    `folder`, loadable with `load_model(folder)`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    write_json(folder / "config.json", config)
    build_tokenizer(vocab[len(SPECIAL_TOKENS):]).save_pretrained(str(folder))
    atomic_write_text(folder / "data.jsonl", "".join(json.dumps(r) + "\n" for r in data))
    return folder


@torch.no_grad()
def mismatches(model, records: list[dict]) -> list[dict]:
    """The records whose outputs the model does not reproduce at every position (argmax of
    its logits after the <bos>): [] when it computes the program on all of them."""
    ids = model.to_tokens([r["prompt"] for r in records])
    predicted = model(ids).argmax(-1)[:, 1:]
    wrong = []
    for record, row in zip(records, predicted.tolist()):
        words = [model.tokenizer.convert_ids_to_tokens(i) for i in row]
        if words != record["outputs"]:
            wrong.append({**record, "predicted": words})
    return wrong


DERIVATION = (
    "from the weights: the components whose weights are not all zero (an attention head whose value and output "
    "weights both write, an MLP whose output projection does), at (layer, position) a used component's layer at the "
    "last position, and at every token position for the components whose outputs a later attention reads there "
    "({everywhere}); then, one at a time, a node is dropped (unneeded) when ablating it with every node outside "
    "the truth keeps at least 90% of the clean logit difference under zero and under mean ablation: the data never "
    "need it (a length computation, where every input has the longest length). The rest is checked by zero and mean "
    "ablation on the benchmark's data (check)."
)


def build(assembled, program, output: str, out: str | Path) -> dict:
    """Convert a compiled `program` (`programs.Program`; `output` its output SOp's label), write
    it to `out`/<name>/ with its data and truth.json, check that it reproduces the program on
    its whole domain (ValueError if not) and check its truth by ablation; returns truth.json."""
    state, config, vocab = convert(assembled, program.name, output)
    data = records(program, balanced_inputs(program))
    target = write_checkpoint(Path(out) / program.name, state, config, vocab, data)
    wrong = mismatches(load_toy(target), records(program, program.domain()))
    if wrong:
        raise ValueError(f"the converted {program.name} differs from its program on {len(wrong)} inputs, e.g. {wrong[0]}")
    seq_len = LENGTH + 1
    found = truth(state, config)
    found["position"] = position_truth(found["site"], program.everywhere, seq_len)
    nodes = {level: GRANULARITIES[level].nodes(config["n_layers"], config["n_heads"], seq_len) for level in found}
    # AUROC compares truth with the rest: a granularity whose every node is in the truth scores nothing
    kept = {level: nodes_in for level, nodes_in in found.items() if len(nodes_in) < len(nodes[level])}
    record = {
        "benchmark": program.name, "kind": "compiled", "description": program.description, "seq_len": seq_len,
        "truth": kept, "left_out": {level: f"every node ({', '.join(found[level])}) is in the truth"
                                    for level in found if level not in kept},
        "derivation": DERIVATION.format(everywhere=", ".join(program.everywhere) or "none in this program"),
        "reproduces": {"inputs": len(program.domain()), "mismatches": 0}, "data": {"inputs": len(data)},
    }  # fmt: skip
    write_json(target / "truth.json", record)
    return record
