"""The benchmark programs in RASP, compiled with tracr (the `tracr` extra: `pip install -e
.[tracr]`; JAX and dm-haiku on the CPU). Only `python -m interventions circuits compile`
imports this module: the compiled models are committed, and the suite loads them without it.
"""

from __future__ import annotations

from tracr.compiler import compiling
from tracr.rasp import rasp

from interventions.circuits.programs import LENGTH, PROGRAMS

BOS, PAD = "BOS", "compiler_pad"


def _length() -> rasp.SOp:
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE)).named("length")


def reverse() -> rasp.SOp:
    """out[i] = tokens[length - 1 - i]: position i attends to the position counted from the end."""
    opposite = (_length() - rasp.indices).named("opposite_plus_one")
    opposite = (opposite - 1).named("opposite")
    return rasp.Aggregate(rasp.Select(rasp.indices, opposite, rasp.Comparison.EQ), rasp.tokens).named("reverse")


def histogram() -> rasp.SOp:
    """out[i] = how many positions hold tokens[i]."""
    return rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)).named("histogram")


def sort() -> rasp.SOp:
    """out[i] = the i-th smallest token: each token's rank is how many tokens are smaller, and
    position i fetches the token whose rank is i (tokens must be unique)."""
    rank = rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT)).named("rank")
    return rasp.Aggregate(rasp.Select(rank, rasp.indices, rasp.Comparison.EQ), rasp.tokens).named("sort")


def count_x() -> rasp.SOp:
    """out[i] = how many tokens are "x": every position selects the positions whose token is
    "x" (a key that is True, for a query that always is), and counts them."""
    is_x = rasp.Map(lambda t: t == "x", rasp.tokens).named("is_x")
    always = rasp.Map(lambda t: True, rasp.tokens).named("always")
    return rasp.SelectorWidth(rasp.Select(is_x, always, rasp.Comparison.EQ)).named("count_x")


def rev_count() -> rasp.SOp:
    """out[i] = reverse[i] + histogram[i], one lookup table over both."""
    return rasp.SequenceMap(lambda a, b: a + b, reverse(), histogram()).named("rev_count")


SOURCES = {"reverse": reverse, "sort": sort, "count_x": count_x, "rev_count": rev_count}


def compile_program(name: str):
    """(tracr's AssembledTransformerModel, the output SOp's label) of a benchmark program."""
    program, sop = PROGRAMS[name], SOURCES[name]()
    assembled = compiling.compile_rasp_to_model(sop, vocab=set(program.vocab), max_seq_len=LENGTH, compiler_bos=BOS,
                                                compiler_pad=PAD)  # fmt: skip
    return assembled, sop.label
