"""encode / TaskDataModule on the tiny model: padding, last positions, and batches."""

from __future__ import annotations

import pytest
import torch

from interventions.errors import TaskError
from interventions.forward import last_position_logits
from interventions.tasks import load_task
from interventions.tasks.datamodule import EncodedTask, TaskDataModule, encode


@pytest.fixture(scope="module")
def mixed_task():
    """CCC prompts of all templates: several token lengths, so padding matters."""
    return load_task("ccc", split="val", template="all", n=24, seed=0)


def _alone(model, prompt: str) -> torch.Tensor:
    with torch.no_grad():
        return model(model.to_tokens(prompt))[0, -1]


@pytest.mark.parametrize("side", ["right", "left"])
def test_encode_shapes_and_positions(tiny_model, mixed_task, side):
    enc = encode(tiny_model, mixed_task, padding_side=side)
    ids = [tiny_model.to_tokens(p)[0].tolist() for p in mixed_task.prompts]
    lengths = torch.tensor([len(x) for x in ids])
    n, width = len(mixed_task), int(lengths.max())
    assert len(set(lengths.tolist())) > 1, "the fixture should mix lengths"
    assert enc["input_ids"].shape == (n, width) and enc["input_ids"].dtype == torch.long
    assert enc["attention_mask"].shape == (n, width)
    for key in ("last_index", "correct", "wrong", "index"):
        assert enc[key].shape == (n,)
    assert torch.equal(enc["attention_mask"].sum(1), lengths)
    assert torch.equal(enc["index"], torch.arange(n))
    pad = tiny_model.tokenizer.pad_token_id
    for row, seq in enumerate(ids):
        real = enc["input_ids"][row][enc["attention_mask"][row].bool()].tolist()
        assert real == seq
        assert enc["input_ids"][row][~enc["attention_mask"][row].bool()].eq(pad).all()
        last = int(enc["last_index"][row])
        assert enc["attention_mask"][row, last] == 1
        assert enc["input_ids"][row, last] == seq[-1]  # the last real token
        if side == "right":
            assert last == len(seq) - 1
            assert enc["attention_mask"][row, : len(seq)].all()
        else:
            assert last == width - 1
            assert enc["attention_mask"][row, width - len(seq) :].all()
    # the first real token is <bos>
    bos = tiny_model.tokenizer.bos_token_id
    first = enc["attention_mask"].argmax(1)
    assert enc["input_ids"][torch.arange(n), first].eq(bos).all()


def test_encode_answer_ids(tiny_model, mixed_task):
    enc = encode(tiny_model, mixed_task)
    tok = tiny_model.tokenizer
    for i, p in enumerate(mixed_task):
        assert tok.decode([int(enc["correct"][i])]) == p.correct.strip()
        assert tok.decode([int(enc["wrong"][i])]) == p.wrong.strip()
    assert not torch.equal(enc["correct"], enc["wrong"])


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_matches_each_prompt_alone(tiny_model, mixed_task, side):
    enc = encode(tiny_model, mixed_task, padding_side=side)
    with torch.no_grad():
        logits = last_position_logits(
            tiny_model, enc["input_ids"], enc["attention_mask"], enc["last_index"]
        )
    assert logits.shape == (len(mixed_task), tiny_model.cfg.d_vocab)
    expected = torch.stack([_alone(tiny_model, p) for p in mixed_task.prompts])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


def test_left_padding_without_mask_differs(tiny_model, mixed_task):
    """Sanity check that the comparison above can fail: ignoring the mask changes logits."""
    enc = encode(tiny_model, mixed_task, padding_side="left")
    with torch.no_grad():
        logits = last_position_logits(tiny_model, enc["input_ids"], None, enc["last_index"])
    expected = torch.stack([_alone(tiny_model, p) for p in mixed_task.prompts])
    padded = enc["attention_mask"].sum(1) < enc["attention_mask"].shape[1]
    assert padded.any()
    assert (logits[padded] - expected[padded]).abs().max() > 1e-3


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_position_logits_equal_full_forward(tiny_model, mixed_task, side):
    enc = encode(tiny_model, mixed_task, padding_side=side)
    rows = torch.arange(len(mixed_task))
    with torch.no_grad():
        full = tiny_model(enc["input_ids"], attention_mask=enc["attention_mask"])
        last = last_position_logits(
            tiny_model, enc["input_ids"], enc["attention_mask"], enc["last_index"]
        )
    assert full.shape[:2] == enc["input_ids"].shape
    torch.testing.assert_close(last, full[rows, enc["last_index"]], atol=1e-4, rtol=0)


def test_last_position_logits_without_padding(tiny_model):
    task = load_task("ioi", split="val", template=1, n=8)
    enc = encode(tiny_model, task)
    assert bool(enc["attention_mask"].all())
    with torch.no_grad():
        full = tiny_model(enc["input_ids"])[:, -1]
        last = last_position_logits(
            tiny_model, enc["input_ids"], enc["attention_mask"], enc["last_index"]
        )
    torch.testing.assert_close(last, full, atol=1e-5, rtol=0)


def test_last_position_logits_runs_extra_hooks_once(tiny_model, mixed_task):
    enc = encode(tiny_model, mixed_task)
    calls = []

    def zero_embed(x, hook):
        calls.append(hook.name)
        return torch.zeros_like(x)

    with torch.no_grad():
        plain = last_position_logits(
            tiny_model, enc["input_ids"], enc["attention_mask"], enc["last_index"]
        )
        hooked = last_position_logits(
            tiny_model,
            enc["input_ids"],
            enc["attention_mask"],
            enc["last_index"],
            fwd_hooks=[("blocks.0.hook_resid_pre", zero_embed)],
        )
        again = last_position_logits(
            tiny_model, enc["input_ids"], enc["attention_mask"], enc["last_index"]
        )
    assert len(calls) == 1  # (the bridge may report the alias's canonical name)
    assert not torch.allclose(plain, hooked)
    torch.testing.assert_close(plain, again, atol=0, rtol=0)  # hooks were removed


def test_encode_rejects_bad_padding_side(tiny_model, mixed_task):
    with pytest.raises(ValueError, match="padding_side"):
        encode(tiny_model, mixed_task, padding_side="middle")


def test_encode_fixed_length(tiny_model, mixed_task):
    with pytest.raises(TaskError, match="unequal token lengths.*dynscalar"):
        encode(tiny_model, mixed_task, fixed_length=True)
    same = load_task("ccc", split="val", template=1, n=10)
    enc = encode(tiny_model, same, fixed_length=True)
    assert bool(enc["attention_mask"].all())


# ------------------------------------------------------------------- data module


@pytest.fixture(scope="module")
def splits():
    return {
        s: load_task("ccc", split=s, template="all", n=n)
        for s, n in (("train", 64), ("val", 20), ("test", 30))
    }


def _indices(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch["index"]]


def test_datamodule_batches(tiny_model, splits):
    dm = TaskDataModule(tiny_model, splits["train"], splits["val"], splits["test"], batch_size=16)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 64, "val": 20, "test": 30}
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) >= {"input_ids", "attention_mask", "last_index", "correct", "wrong", "index"}
    assert batch["input_ids"].shape[0] == 16
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert torch.equal(batch["last_index"], batch["attention_mask"].sum(1) - 1)  # right padding
    # batches carry the rows of the encoded task
    enc = encode(tiny_model, splits["train"])
    for key in enc:
        assert torch.equal(batch[key], enc[key][batch["index"]])
    # evaluation loaders are unshuffled and complete
    assert _indices(dm.val_dataloader()) == list(range(20))
    assert _indices(dm.test_dataloader()) == list(range(30))
    assert _indices(dm.loader("train")) == list(range(64))
    assert sorted(_indices(dm.train_dataloader())) == list(range(64))


def test_clean_logprobs_are_the_frozen_models_last_position_log_softmax(tiny_model, splits):
    from interventions.tasks.datamodule import clean_logprobs

    dm = TaskDataModule(tiny_model, splits["val"], batch_size=7)
    dm.setup()
    batches = list(dm.loader("train"))
    got = torch.cat([b["clean_logprobs"] for b in batches])
    expected = torch.log_softmax(
        torch.stack([_alone(tiny_model, p) for p in splits["val"].prompts]), dim=-1
    )
    assert got.shape == (20, tiny_model.cfg.d_vocab)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    enc = encode(tiny_model, splits["val"], padding_side="left")
    torch.testing.assert_close(
        clean_logprobs(tiny_model, enc, batch_size=3), expected, atol=1e-4, rtol=0
    )


def test_datamodule_without_val_and_test(tiny_model, splits):
    dm = TaskDataModule(tiny_model, splits["train"], batch_size=8)
    assert dm.val_dataloader() == [] and dm.test_dataloader() == []
    assert sorted(_indices(dm.train_dataloader())) == list(range(64))


def test_train_loader_is_deterministic_for_a_shuffle_seed(tiny_model, splits):
    a = TaskDataModule(tiny_model, splits["train"], batch_size=8, shuffle_seed=7)
    b = TaskDataModule(tiny_model, splits["train"], batch_size=8, shuffle_seed=7)
    c = TaskDataModule(tiny_model, splits["train"], batch_size=8, shuffle_seed=8)
    order = _indices(a.train_dataloader())
    assert order != list(range(64)), "train batches should be shuffled"
    assert _indices(a.train_dataloader()) == order  # a fresh loader repeats the order
    assert _indices(b.train_dataloader()) == order  # so does another module
    assert _indices(c.train_dataloader()) != order  # another seed, another order
    # the order depends on (seed, epoch) only: set_epoch (Lightning calls it) gives new orders
    loader = a.train_dataloader()
    assert _indices(loader) == order and _indices(loader) == order  # same epoch, same order
    loader.sampler.set_epoch(1)
    epoch1 = _indices(loader)
    assert epoch1 != order and sorted(epoch1) == sorted(order)
    b_loader = b.train_dataloader()
    b_loader.sampler.set_epoch(1)
    assert _indices(b_loader) == epoch1


def test_left_padded_datamodule(tiny_model, splits):
    dm = TaskDataModule(tiny_model, splits["val"], padding_side="left", batch_size=20)
    batch = next(iter(dm.loader("train")))
    width = batch["input_ids"].shape[1]
    assert batch["last_index"].eq(width - 1).all()
    assert batch["attention_mask"][:, -1].eq(1).all()


def test_attach_adds_a_per_example_tensor(tiny_model, splits):
    dm = TaskDataModule(tiny_model, splits["val"], batch_size=6)
    dm.setup()
    values = torch.arange(20, dtype=torch.float32) * 10
    dm.datasets["train"].attach("clean", values)
    seen = torch.cat([b["clean"] for b in dm.loader("train")])
    assert torch.equal(seen, values)
    with pytest.raises(ValueError, match="19 rows for 20 examples"):
        dm.datasets["train"].attach("bad", values[:19])


def test_encoded_task_rows(tiny_model, splits):
    ds = EncodedTask(encode(tiny_model, splits["val"]))
    assert len(ds) == 20
    row = ds[3]
    assert int(row["index"]) == 3 and row["input_ids"].ndim == 1


# ------------------------------------------------------------------- a Hugging Face model


GPT2_PROMPTS = (
    "The capital of France is",
    "When Mary and John went to the store, John gave a drink to",
    "Hi",
)


def _gpt2_task():
    from interventions.tasks import DataPoint, Task

    return Task(
        "custom", "train", "0", tuple(DataPoint(p, " Paris", " Rome") for p in GPT2_PROMPTS)
    )


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_full_forward_on_a_hf_model(tiny_gpt2, side):
    """The bridge's own forward handles padding of a Hugging Face GPT-2 (positions included)."""
    model, _ = tiny_gpt2
    enc = encode(model, _gpt2_task(), padding_side=side)
    assert len(set(enc["attention_mask"].sum(1).tolist())) == 3
    expected = torch.stack([_alone(model, p) for p in GPT2_PROMPTS])
    with torch.no_grad():
        full = model(enc["input_ids"], attention_mask=enc["attention_mask"])
    torch.testing.assert_close(
        full[torch.arange(3), enc["last_index"]], expected, atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_position_logits_on_a_hf_model(tiny_gpt2, side):
    model, _ = tiny_gpt2
    enc = encode(model, _gpt2_task(), padding_side=side)
    expected = torch.stack([_alone(model, p) for p in GPT2_PROMPTS])
    with torch.no_grad():
        logits = last_position_logits(
            model, enc["input_ids"], enc["attention_mask"], enc["last_index"]
        )
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
