"""The programs of the compiled benchmarks, as this project wrote them: what each computes (its
reference in Python), its input vocabulary, and which of its components' outputs are read at
every token position. Their RASP form is in `circuits.rasp` (tracr, the `tracr` extra); this
module needs neither, so the committed models are checked against their programs without JAX.

Every input has `LENGTH` tokens (after the `<bos>`): position-tied methods need one length.
The benchmark's behaviour is the output at the last position, so each input is a contrastive
data point (x, c, w): c the program's output there, w another value the output takes; the
benchmark's inputs have every output value equally often (`balanced_inputs`).

    reverse     the input backwards: at the last position, the first token
    sort        the tokens in increasing order (unique tokens): at the last position, the largest
    count_x     how many tokens are "x" (the same at every position)
    rev_count   reverse plus histogram: at position i, tokens[n-1-i] + how often tokens[i] occurs
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

LENGTH = 4  # tokens per input, without the <bos>


@dataclass(frozen=True)
class Program:
    """A program's reference and domain.

    `everywhere`: the components ("attnOut_0", "mlpOut_1", ...) whose outputs a later
    attention reads at other positions (as keys or values), so they matter at every token
    position; the others' outputs matter at the last position only (docs/circuits.md).
    """

    name: str
    description: str
    vocab: tuple
    unique: bool  # inputs without repeated tokens (sort's ranks need them)
    reference: Callable[[list], list]  # tokens -> the output at every position
    everywhere: tuple[str, ...] = ()

    def domain(self) -> list[tuple]:
        """Every input of LENGTH tokens."""
        if self.unique:
            return list(itertools.permutations(self.vocab, LENGTH))
        return list(itertools.product(self.vocab, repeat=LENGTH))


def _histogram(tokens: list) -> list:
    return [tokens.count(t) for t in tokens]


PROGRAMS = {
    p.name: p
    for p in (
        Program("reverse", "the input backwards; at the last position, the first token", (1, 2, 3), False,
                lambda t: t[::-1]),
        Program("sort", "the tokens in increasing order; at the last position, the largest", (1, 2, 3, 4, 5), True,
                sorted, everywhere=("attnOut_0", "mlpOut_0")),
        Program("count_x", 'how many tokens are "x"', ("x", "y", "z"), False, lambda t: [t.count("x")] * len(t),
                everywhere=("mlpOut_0",)),
        Program("rev_count", "the token at the mirrored position plus how often this position's token occurs",
                (1, 2, 3), False, lambda t: [a + b for a, b in zip(t[::-1], _histogram(t))]),
    )
}  # fmt: skip


def word(value) -> str:
    """A program value as a word of the benchmark's vocabulary."""
    return str(value)


MIN_PER_VALUE = 8  # an output value with fewer inputs than this is left out of the benchmark's data


def records(program: Program, inputs: list[tuple], seed: int = 0) -> list[dict]:
    """One record per input: prompt, correct (the output at the last position), wrong (another
    output value of `inputs`, drawn with `seed`), corrupted (another input whose output
    differs, drawn likewise: the patching baselines' corrupted prompt) and outputs (the
    output at every position, to check a model against)."""
    rng = random.Random(seed)
    outputs = [program.reference(list(x)) for x in inputs]
    values = sorted({out[-1] for out in outputs}, key=str)
    result = []
    for x, out in zip(inputs, outputs):
        corrupted = rng.choice([y for y, o in zip(inputs, outputs) if o[-1] != out[-1]])
        result.append({
            "prompt": " ".join(word(t) for t in x),
            "correct": " " + word(out[-1]),
            "wrong": " " + word(rng.choice([v for v in values if v != out[-1]])),
            "corrupted": " ".join(word(t) for t in corrupted),
            "outputs": [word(v) for v in out],
        })  # fmt: skip
    return result


def balanced_inputs(program: Program, seed: int = 0) -> list[tuple]:
    """The benchmark's inputs: as many of each last-position output value as the rarest value
    has (values with fewer than MIN_PER_VALUE inputs left out), drawn with `seed`.

    Why: with every value equally often the correct answer and (drawn uniformly from the
    others) the wrong one, any output that no longer depends on the input, as after ablating
    the whole circuit, has a mean logit difference of exactly 0; with unequal values the
    most common one keeps a share of the clean difference however complete the ablation."""
    by_value: dict = {}
    for x in program.domain():
        by_value.setdefault(program.reference(list(x))[-1], []).append(x)
    kept = {v: xs for v, xs in by_value.items() if len(xs) >= MIN_PER_VALUE}
    per_value = min(len(xs) for xs in kept.values())
    rng = random.Random(seed)
    chosen = [x for v in sorted(kept, key=str) for x in rng.sample(kept[v], per_value)]
    return sorted(chosen, key=lambda x: [str(t) for t in x])
