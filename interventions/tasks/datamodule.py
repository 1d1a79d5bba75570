"""Batches of a task: tokenized once, with attention mask and last-position index."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from interventions.errors import ConfigError
from interventions.forward import answer_tails, has_answer_tails, last_position_logits
from interventions.models import model_device
from interventions.sites import hook
from interventions.spec import FILE_TASKS
from interventions.tasks.datapoint import Task
from interventions.tasks.tokenize import prompt_token_ids
from interventions.tasks.validation import answer_ids, check_fixed_length, single_token_id


@torch.no_grad()
def clean_logprobs(model, tensors: dict, batch_size: int = 64) -> torch.Tensor:
    """[N, vocab] log-softmax of the clean model's last-position logits (float32, CPU)."""
    device = model_device(model)
    out = []
    for start in range(0, len(tensors["index"]), batch_size):
        sl = slice(start, start + batch_size)
        logits = last_position_logits(
            model,
            tensors["input_ids"][sl].to(device),
            tensors["attention_mask"][sl].to(device),
            tensors["last_index"][sl].to(device),
        )
        out.append(torch.log_softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out)


def encode(model, task: Task, padding_side: str = "right", fixed_length: bool = False) -> dict:
    """Tokenize a task once.

    Returns a dict of tensors, N = len(task), T = longest prompt:
        input_ids [N, T] (padded with the tokenizer's pad id), attention_mask [N, T],
        last_index [N] (position of the last real token), correct [N], wrong [N]
        (answer token ids), index [N] (position in the task); and hold_correct [N],
        hold_wrong [N] when every data point carries a held pair. A task of answers of
        several tokens (`task.info["multi_token"]`, docs/method.md §6) also has
        answer_ids [N, 2, A] (each answer's tokens, correct then wrong, zero-padded to the
        longest, A) and answer_len [N, 2]; correct and wrong are then their first tokens.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    tokenizer = model.tokenizer
    ids = prompt_token_ids(model, task.prompts)
    lengths = [len(x) for x in ids]
    if fixed_length:
        check_fixed_length(lengths, f"task {task.name!r} (split {task.split})", from_file=task.name in FILE_TASKS)
    n, width = len(ids), max(lengths)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for row, seq in enumerate(ids):
        start = 0 if padding_side == "right" else width - len(seq)
        input_ids[row, start : start + len(seq)] = torch.tensor(seq)
        mask[row, start : start + len(seq)] = 1
    lengths_t = torch.tensor(lengths)
    last_index = lengths_t - 1 if padding_side == "right" else torch.full((n,), width - 1)
    hold = {}
    if all(p.hold_correct is not None and p.hold_wrong is not None for p in task):
        hold = {
            "hold_correct": torch.tensor([single_token_id(tokenizer, p.hold_correct) for p in task]),
            "hold_wrong": torch.tensor([single_token_id(tokenizer, p.hold_wrong) for p in task]),
        }
    if task.info.get("multi_token"):
        answers = _answer_tensors(tokenizer, task)
    else:
        answers = {
            "correct": torch.tensor([single_token_id(tokenizer, p.correct) for p in task]),
            "wrong": torch.tensor([single_token_id(tokenizer, p.wrong) for p in task]),
        }
    return {**hold, "input_ids": input_ids, "attention_mask": mask, "last_index": last_index, **answers,
            "index": torch.arange(n)}  # fmt: skip


def _answer_tensors(tokenizer, task: Task) -> dict:
    """answer_ids [N, 2, A], answer_len [N, 2], and the first tokens as correct [N], wrong [N]."""
    pairs = [(answer_ids(tokenizer, p.correct), answer_ids(tokenizer, p.wrong)) for p in task]
    width = max(len(a) for pair in pairs for a in pair)
    ids = torch.zeros((len(pairs), 2, width), dtype=torch.long)
    for row, pair in enumerate(pairs):
        for col, answer in enumerate(pair):
            ids[row, col, : len(answer)] = torch.tensor(answer)
    lengths = torch.tensor([[len(a) for a in pair] for pair in pairs])
    return {"answer_ids": ids, "answer_len": lengths, "correct": ids[:, 0, 0], "wrong": ids[:, 1, 0]}


@torch.no_grad()
def clean_tails(model, tensors: dict, batch_size: int = 64) -> torch.Tensor:
    """[N] the clean model's answer tails (`forward.answer_tails` at β = 0, no hooks); zero
    when every answer is one token."""
    if not has_answer_tails(tensors):
        return torch.zeros(len(tensors["index"]))
    device = model_device(model)
    keys = ("input_ids", "attention_mask", "last_index", "answer_ids", "answer_len")
    out = []
    for start in range(0, len(tensors["index"]), batch_size):
        batch = {k: tensors[k][start : start + batch_size].to(device) for k in keys}
        out.append(answer_tails(model, batch, betas=(0.0,))[0][1].cpu())
    return torch.cat(out)


@torch.no_grad()
def clean_residual(model, tensors: dict, layer: int, batch_size: int = 64) -> torch.Tensor:
    """[N, T, d_model] the clean residual stream entering block `layer` (CPU)."""
    device = model_device(model)
    name = hook("resid_pre", layer)
    out = []
    for start in range(0, len(tensors["index"]), batch_size):
        ids = tensors["input_ids"][start : start + batch_size].to(device)
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n == name)
        out.append(cache[name].float().cpu())
    return torch.cat(out)


class EncodedTask(Dataset):
    """Row i of every tensor in an `encode` dict (plus anything attached later)."""

    def __init__(self, tensors: dict):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors["index"])

    def __getitem__(self, i: int) -> dict:
        return {k: v[i] for k, v in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> dict:
        """A whole batch, one index per tensor (DataLoader's batched fetch, with `batched` as
        its collate_fn): the rows `default_collate` would stack, without the per-row
        dictionaries and stacks (0.3–0.5 ms of a 10 ms toy step)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return {k: v[index] for k, v in self.tensors.items()}

    def loader(self, batch_size: int, sampler: Sampler | None = None) -> DataLoader:
        """Batches of `batch_size` rows, in order or in `sampler`'s, each fetched at once
        (`__getitems__`)."""
        return DataLoader(self, batch_size=batch_size, sampler=sampler, collate_fn=batched)

    def attach(self, name: str, values: torch.Tensor) -> None:
        """Add a per-example tensor [N, ...] that every batch then carries."""
        if len(values) != len(self):
            raise ValueError(f"{name}: {len(values)} rows for {len(self)} examples")
        self.tensors[name] = values


def batched(batch: dict) -> dict:
    """The collate_fn of `EncodedTask`'s loaders: `__getitems__` already made the batch."""
    return batch


class EpochShuffle(Sampler):
    """A shuffle that depends only on (seed, epoch), not on how many iterators were made.

    Lightning calls `set_epoch` before every epoch (as for distributed samplers); a plain
    loop calls it too, so the same seed gives the same batches in both (fused sweeps rely
    on this to reproduce separate runs).

    Under DDP (`world` > 1) every process draws the same permutation and takes its part of
    each global batch of `batch` data points: process r gets positions r·b..(r+1)·b-1 of it,
    b = batch / world. So the processes together see exactly the single-process batches, in
    the same order, and the averaged gradient is the single-process one. A last, partial
    global batch is split as evenly as it goes (dropped when it has fewer data points than
    processes: every process must take the same number of steps).
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, batch: int = 1):
        self.n, self.seed, self.epoch = n, seed, 0
        self.rank, self.world, self.batch = rank, world, batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        if self.world == 1:
            return iter(order)
        return iter(self._part(order))

    def _part(self, order: list[int]) -> list[int]:
        out = []
        for start in range(0, self.n, self.batch):
            chunk = order[start : start + self.batch]
            if len(chunk) < self.world:
                break
            cut = [len(chunk) * r // self.world for r in range(self.world + 1)]
            out += chunk[cut[self.rank] : cut[self.rank + 1]]
        return out

    def __len__(self) -> int:
        return self.n if self.world == 1 else len(self._part(list(range(self.n))))


class TaskDataModule(L.LightningDataModule):
    """Train/val/test splits of a task, tokenized once in `setup`.

    Batches are dicts: input_ids [B, T], attention_mask [B, T], last_index [B],
    correct [B], wrong [B], index [B], and clean_logprobs [B, vocab]: the clean model's
    last-position log-probs, the faithfulness reference, computed once here. Answers of
    several tokens add answer_ids [B, 2, A], answer_len [B, 2] and clean_tail [B].
    """

    def __init__(
        self,
        model,
        train: Task | None,
        val: Task | None = None,
        test: Task | None = None,
        batch_size: int = 32,
        padding_side: str = "right",
        fixed_length: bool = False,
        shuffle_seed: int = 0,
    ):
        super().__init__()
        self.model = model
        self.tasks = {"train": train, "val": val, "test": test}
        self.batch_size = batch_size
        self.padding_side = padding_side
        self.fixed_length = fixed_length
        self.shuffle_seed = shuffle_seed
        self.datasets: dict[str, EncodedTask] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, task in self.tasks.items():
            if task is not None and split not in self.datasets:
                tensors = encode(self.model, task, self.padding_side, self.fixed_length)
                tensors["clean_logprobs"] = clean_logprobs(self.model, tensors)
                if "answer_ids" in tensors:
                    tensors["clean_tail"] = clean_tails(self.model, tensors)
                self.datasets[split] = EncodedTask(tensors)

    def cache_residual(self, layer: int) -> None:
        """Attach `resid_pre` (the clean residual entering `layer`) to every split, once."""
        for dataset in self.datasets.values():
            if "resid_pre" not in dataset.tensors:
                dataset.attach("resid_pre", clean_residual(self.model, dataset.tensors, layer))

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        self.setup()
        if not shuffle:
            return self.datasets[split].loader(self.batch_size)
        rank, world = self._process()
        if self.batch_size % world:
            raise ConfigError(f"task.batch_size={self.batch_size} does not split over {world} DDP processes; "
                              f"use a multiple of {world}")  # fmt: skip
        sampler = EpochShuffle(len(self.datasets[split]), self.shuffle_seed, rank, world, self.batch_size)
        return self.datasets[split].loader(self.batch_size // world, sampler)

    def _process(self) -> tuple[int, int]:
        """(this process's rank, the number of processes) of the Trainer using this data."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val") if self.tasks["val"] is not None else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test") if self.tasks["test"] is not None else []

    def loader(self, split: str) -> DataLoader:
        """An unshuffled loader of any split (for evaluation)."""
        return self._loader(split)
