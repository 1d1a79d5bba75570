"""Which trained positions a position-tied method acts on, forward by forward (docs/method.md
§7): the object ActivScalar and SteerVec own (`Method.positions`), which generation and the
plain Hugging Face model (`hf`) hand each forward's positions to through one call.

Without tracking (training, evaluation), a forward's activations are exactly the trained
prompts' positions 0..seq_len-1. While tracking (`track`), each forward's positions are
given as ids [rows or 1, seq] counted from each row's first real token (-1 at padding):
positions past the trained prompt get no parameters, or, with `beyond="last"`, the last
prompt position's. A cached decoding step past the prompt is told so without ids (`past`):
every prompt of a position-tied method has the trained length, so each new token lies past
it, and the method does nothing there without one tensor operation.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from interventions.errors import ConfigError, LengthError
from interventions.sites import LocationGrid
from interventions.spec import POSITIONS_BEYOND


def check_beyond(beyond: str) -> None:
    if beyond not in POSITIONS_BEYOND:
        raise ConfigError(f"positions_beyond={beyond!r} is not allowed; allowed: {', '.join(POSITIONS_BEYOND)}")


class Positions:
    """A position-tied method's grid positions over a prompt of `grid.seq_len` tokens, and,
    while tracked, the positions of the current forward (module docstring)."""

    def __init__(self, grid: LocationGrid, name: str):
        self.grid, self.name = grid, name
        self.trained: int = grid.seq_len
        self.index: torch.Tensor = torch.tensor(grid.positions, dtype=torch.long)  # [P] the grid's positions
        self.tracking, self.beyond = False, "none"
        self.session = 0  # counts `track` blocks: what a hook computes once per block is keyed by it
        self.active = True  # whether this forward has a position the parameters act on
        # while tracked: (index [rows, seq] into the trained positions, keep [rows, seq] 1.0 where
        # they act, else 0.0), or (None, n): the prompt's n positions then none (one unpadded row)
        self._ids: tuple | None = None

    def check_length(self, seq_len: int) -> None:
        """A position-tied method applies only to prompts of the length it was trained on."""
        if seq_len != self.trained:
            raise LengthError(
                f"this {self.name} intervention is tied to {self.trained}-token prompts but got {seq_len}-token "
                "prompts; use prompts of the trained template, or train intervention=dynscalar, which accepts any length",
                trained=self.trained, got=seq_len,
            )  # fmt: skip

    def full(self, values: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Per-grid-position values [P, ...] scattered into [seq_len, ...] (zeros elsewhere)."""
        self.check_length(seq_len)
        if len(self.grid.positions) == seq_len:
            return values
        return values.new_zeros((seq_len, *values.shape[1:])).index_copy(0, self.index.to(values.device), values)

    @contextmanager
    def track(self, beyond: str = "none"):
        """Within the block, each forward's positions come from `see` (the yielded callable:
        `see(ids)` or `see(past=k)`, once per forward); the untracked state returns after."""
        check_beyond(beyond)
        previous = self.tracking, self.beyond, self.active, self._ids
        self.tracking, self.beyond, self.active, self._ids = True, beyond, True, None
        self.session += 1
        try:
            yield self.see
        finally:
            self.tracking, self.beyond, self.active, self._ids = previous

    def see(self, ids: torch.Tensor | None = None, past: int = 0, length: int | None = None) -> None:
        """The positions of the next forward: `ids` [rows or 1, seq] counted from each row's
        first real token (-1 at padding); `length`: every row unpadded, positions 0..length-1;
        or `past` > 0 for a cached step after the prompt."""
        if past > 0 and self.beyond == "none":
            self.active = False
            return
        if length is not None:
            ids = torch.arange(length)[None]
            if self.beyond == "none":  # the prompt's positions, then none: the same values at every step
                self._ids, self.active = (None, length), True
                return
        if ids is None:  # a cached step with "last": every new token takes the last position's parameters
            ids = torch.full((1, 1), self.trained, dtype=torch.long)
        keep = (ids >= 0) if self.beyond == "last" else (ids >= 0) & (ids < self.trained)
        self._ids = (ids.clamp(0, self.trained - 1), keep.float())
        self.active = bool(keep.any())

    def padded(self, values: torch.Tensor, length: int) -> torch.Tensor:
        """[length, ...]: the trained prompt's values [P, ...] at its positions, zeros after
        (or the first `length` of them)."""
        table = self.full(values, self.trained)
        if length <= self.trained:
            return table[:length]
        return F.pad(table, (0, 0) * (table.dim() - 1) + (0, length - self.trained))

    def steady(self) -> int | None:
        """The forward's length while its positions are one unpadded row 0..length-1 with
        nothing past the prompt steered: then a position-tied hook's values over positions are
        the same at every step of a generation, but for their length; else None."""
        if self.tracking and self._ids is not None and self._ids[0] is None:
            return self._ids[1]
        return None

    def per_session(self, cache: dict, make, pos_dim: int) -> torch.Tensor:
        """`make(length)` (a hook's tensor over positions, along `pos_dim`, for `length`
        positions; None: this forward's own) computed once per tracking block at a length that
        covers the forward's (parameters do not change while generating) and narrowed to it,
        while the forward is `steady`; otherwise made for this forward."""
        length = self.steady()
        if length is None:
            return make(None)
        made = cache.get(self.session)
        if made is None or made.shape[pos_dim] < length:
            cache.clear()
            made = cache[self.session] = make(max(length, 2 * self.trained))
        return made.narrow(pos_dim, 0, length)

    def spread(self, values: torch.Tensor, h: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """Per-grid-position values [P, ...] laid over the positions of h [rows, seq, ...]:
        [seq, ...] for the trained prompts themselves (untracked), else [rows, seq, ...] read
        off the tracked positions (zeros at padding, and past the prompt unless `beyond` is
        "last"); positions given for fewer rows than h repeat over h's rows (a batch repeated
        once per β, or per fused setting). `length`: of a steady forward, another length than
        h's (`per_session`)."""
        if not self.tracking:
            return self.full(values, h.shape[1])
        index, keep = self._ids
        if index is None:  # the prompt's positions, then none: zeros after them
            return self.padded(values, length or h.shape[1])
        if index.device != values.device:
            index, keep = index.to(values.device), keep.to(values.device)
            self._ids = (index, keep)
        if index.shape[0] not in (1, h.shape[0]):
            reps = h.shape[0] // index.shape[0]
            index, keep = index.repeat(reps, 1), keep.repeat(reps, 1)
        table = self.full(values, self.trained)  # [trained, ...]
        return table[index] * keep.to(table.dtype).view(*keep.shape, *([1] * (table.dim() - 1)))
