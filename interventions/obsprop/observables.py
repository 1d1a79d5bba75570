"""Observables: linear functionals n ∈ R^V on a model's logits (docs/method.md §9).

An observable is built from
- a token pair: n = e_c − e_w (a logit difference),
- weighted token sets: n = Σ_t w_t e_t, e.g. {"her": 1, "woman": 1, "him": -1, "man": -1},
- a raw vector of length d_vocab.

Every token must be a single token of the tokenizer; otherwise a `TaskError` says how it
tokenizes. `direction(model)` is u = W_U n ∈ R^d_model (TransformerLens row-vector
convention: logits = x W_U + b_U, so n · logits = x · (W_U n) + const). The LayerNorm
aware version (through `ln_final`) is `features.final_direction`.

    >>> obs = Observable.from_pair(tokenizer, " she", " he")
    >>> obs = Observable.parse("she-he", tokenizer)          # the CLI's syntax
    >>> obs = Observable.parse("her:1,woman:1,him:-1", tokenizer)
    >>> u = obs.direction(model)                             # [d_model]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from interventions.errors import CancellingObservableError, TaskError
from interventions.tasks.validation import single_token_id


def token_id(tokenizer, token: str) -> int:
    """The id of `token`, which must be a single token; else a one-line TaskError."""
    return single_token_id(tokenizer, token, what="observable token")


@dataclass(frozen=True)
class Observable:
    """A linear functional n on the logits.

    Attributes:
        terms: {token id: weight} for token-built observables (sparse), or None.
        dense: a raw [d_vocab] vector, or None.
        label: a short human-readable name ("she-he").
        tokens: {token string: weight} as given (for reports).
    """

    terms: Mapping[int, float] | None = None
    dense: torch.Tensor | None = None
    label: str = "observable"
    tokens: Mapping[str, float] = field(default_factory=dict)

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def from_pair(cls, tokenizer, correct: str, wrong: str, label: str | None = None) -> "Observable":
        """n = e_correct − e_wrong."""
        return cls.from_tokens(tokenizer, {correct: 1.0, wrong: -1.0}, label or f"{correct.strip()}-{wrong.strip()}")

    @classmethod
    def from_tokens(cls, tokenizer, weights: Mapping[str, float], label: str | None = None) -> "Observable":
        """n = Σ_t weights[t] e_t; every t must be a single token."""
        if not weights:
            raise TaskError("an observable needs at least one token")
        terms: dict[int, float] = {}
        for tok, w in weights.items():
            i = token_id(tokenizer, tok)
            terms[i] = terms.get(i, 0.0) + float(w)
        if all(w == 0 for w in terms.values()):
            raise TaskError(f"observable {dict(weights)} is zero (its token weights cancel)")
        if label is None:
            label = "".join(f"{'+' if w >= 0 else '-'}{'' if abs(w) == 1 else f'{abs(w):g}*'}{t.strip()}"
                            for t, w in weights.items()).lstrip("+")
        return cls(terms=terms, label=label, tokens={t: float(w) for t, w in weights.items()})

    @classmethod
    def from_vector(cls, vector, label: str = "vector") -> "Observable":
        """A raw functional: a [d_vocab] vector."""
        v = torch.as_tensor(vector, dtype=torch.float32).detach().clone()
        if v.dim() != 1:
            raise TaskError(f"an observable vector must be 1-D [d_vocab], got shape {tuple(v.shape)}")
        return cls(dense=v, label=label)

    @classmethod
    def parse(cls, spec: str, tokenizer) -> "Observable":
        """The CLI's syntax.

        - "she-he"             -> e_she − e_he (a pair: exactly one '-' between two tokens)
        - "she:1,he:-1"        -> weighted tokens (comma-separated token:weight)
        - "+her+woman-him-man" -> unit weights with signs (a sign before every token)
        Tokens are used as written, leading spaces included (a BPE tokenizer such as
        GPT-2's needs them: " she- he", " she:1, he:-1"); trailing spaces are dropped.
        """
        text = spec.rstrip()
        if not text.strip():
            raise TaskError("empty observable; write e.g. 'she-he' or 'she:1,he:-1'")
        if ":" in text:
            weights: dict[str, float] = {}
            for part in text.split(","):
                if not part.strip():
                    continue
                tok, sep, w = part.rpartition(":")
                tok = tok.rstrip()
                try:
                    weights[tok] = weights.get(tok, 0.0) + float(w)
                except ValueError:
                    raise TaskError(f"observable {spec!r}: {part!r} is not token:weight") from None
            return cls.from_tokens(tokenizer, weights, label=spec.strip())
        if text.lstrip()[0] in "+-":
            weights = {}
            for sign, tok in re.findall(r"([+-])([^+-]+)", text.lstrip()):
                weights[tok.rstrip()] = weights.get(tok.rstrip(), 0.0) + (1.0 if sign == "+" else -1.0)
            return cls.from_tokens(tokenizer, weights, label=spec.strip())
        a, sep, b = text.partition("-")
        if not sep or not a.strip() or not b.strip() or "-" in b:
            raise TaskError(
                f"observable {spec!r}: write a pair as 'A-B', weights as 'A:1,B:-1' or signed tokens as '+A-B'"
            )
        return cls.from_pair(tokenizer, a.rstrip(), b.rstrip(), label=f"{a.strip()}-{b.strip()}")

    # -- values -----------------------------------------------------------------------
    def vector(self, d_vocab: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """n as a dense [d_vocab] vector."""
        if self.dense is not None:
            if self.dense.shape[0] != d_vocab:
                raise TaskError(
                    f"observable {self.label!r} has {self.dense.shape[0]} entries but the model has "
                    f"d_vocab={d_vocab}"
                )
            return self.dense.to(device=device, dtype=dtype)
        n = torch.zeros(d_vocab, device=device, dtype=dtype)
        for i, w in self.terms.items():
            if not 0 <= i < d_vocab:
                raise TaskError(f"observable {self.label!r}: token id {i} is outside the model's vocabulary ({d_vocab})")
            n[i] += w
        return n

    def direction(self, model) -> torch.Tensor:
        """u = W_U n ∈ R^d_model, float32 (no LayerNorm; see features.final_direction)."""
        W_U = model.W_U.detach()
        return W_U.float() @ self.vector(W_U.shape[1], W_U.device)

    def __neg__(self) -> "Observable":
        if self.dense is not None:
            return Observable(dense=-self.dense, label=f"-({self.label})")
        return Observable(
            terms={i: -w for i, w in self.terms.items()},
            label=f"-({self.label})",
            tokens={t: -w for t, w in self.tokens.items()},
        )

    def to_dict(self) -> dict:
        out = {"label": self.label}
        if self.terms is not None:
            out["token_ids"] = {str(i): w for i, w in self.terms.items()}
            out["tokens"] = dict(self.tokens)
        return out


def observable_for_task(
    task_points: Sequence, tokenizer, label: str | None = None, allow_cancel: bool = False
) -> Observable:
    """The observable of a task: the mean over its data points of e_correct − e_wrong.

    With one answer pair this is e_c − e_w. With different pairs per point it is their
    mean, which is what a data-independent change (a steering vector) moves to first
    order: mean_i (e_ci − e_wi) · Δlogits. When pairs cancel (a symmetric task such as
    pronouns, she−he for female names and he−she for male ones) the mean is nearly zero;
    a TaskError then asks for an explicit observable (unless `allow_cancel`). CCC is
    such a task too: every capital is the correct answer for some prompts and the
    in-context foil for others.

    Args:
        task_points: DataPoints (prompt, correct, wrong), e.g. a `Task`.
        tokenizer: the model's tokenizer (answers must be single tokens).
        label: a name for reports (default: the pair, or "mean of K answer pairs").
        allow_cancel: return the (near-zero) mean instead of raising.
    """
    points = list(task_points)
    if not points:
        raise TaskError("observable_for_task: the task has no data points")
    terms: dict[int, float] = {}
    names: dict[int, str] = {}
    for p in points:
        c, w = token_id(tokenizer, p.correct), token_id(tokenizer, p.wrong)
        terms[c] = terms.get(c, 0.0) + 1.0 / len(points)
        terms[w] = terms.get(w, 0.0) - 1.0 / len(points)
        names.setdefault(c, p.correct)
        names.setdefault(w, p.wrong)
    norm = sum(v * v for v in terms.values()) ** 0.5
    if norm < 0.05 * 2**0.5 and not allow_cancel:  # each point's e_c − e_w has norm √2
        pairs = sorted({(p.correct.strip(), p.wrong.strip()) for p in points})[:4]
        raise CancellingObservableError(
            f"the task's answer pairs cancel out (mean of e_correct − e_wrong has norm {norm:.3g}; "
            f"pairs such as {', '.join(a + '-' + b for a, b in pairs)}); pass an explicit observable, "
            f"e.g. --observable '{pairs[0][0]}-{pairs[0][1]}'"
        )
    terms = {i: v for i, v in terms.items() if abs(v) > 1e-12} or {c: 0.0}
    pairs = {(p.correct.strip(), p.wrong.strip()) for p in points}
    if label is None:
        label = f"{next(iter(pairs))[0]}-{next(iter(pairs))[1]}" if len(pairs) == 1 else f"mean of {len(pairs)} answer pairs"
    return Observable(terms=terms, label=label, tokens={names[i]: v for i, v in terms.items()})
