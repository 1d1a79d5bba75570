"""The toy world: tokenizer, corpus (never any held-out prompt), splits, and the trained
toy model's behaviour on held-out prompts, computed here independently of the report."""

from __future__ import annotations

import random
import re

import pytest
import torch

from interventions.tasks import load_task
from interventions.toyworld import corpus, world
from interventions.toyworld.tokenizer import SPECIAL_TOKENS, build_tokenizer, load_tokenizer

TOY_TASKS = ("ccc", "ioi", "pronouns", "bias")
MAX_PER_TEMPLATE = 128
ACCURACY = 0.95
SKEW = 0.8


# ------------------------------------------------------------------- tokenizer


def test_every_word_is_one_token(toy_tokenizer):
    words = corpus.all_words()
    assert len(words) == len(set(words))
    assert len(toy_tokenizer) == len(SPECIAL_TOKENS) + len(words)
    unk = toy_tokenizer.unk_token_id
    seen = set()
    for word in words:
        ids = toy_tokenizer(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != unk, word
        assert toy_tokenizer(" " + word, add_special_tokens=False)["input_ids"] == ids
        assert toy_tokenizer.decode(ids) == word
        seen.add(ids[0])
    assert len(seen) == len(words)


def test_special_tokens_and_bos(toy_tokenizer):
    assert [toy_tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert toy_tokenizer.pad_token == "<pad>" and toy_tokenizer.bos_token == "<bos>"
    ids = toy_tokenizer("The capital of France is Paris .")["input_ids"]
    assert ids[0] == toy_tokenizer.bos_token_id and len(ids) == 8


def test_unknown_words_map_to_unk(toy_tokenizer):
    ids = toy_tokenizer("The capital of Atlantis is Zzyzx", add_special_tokens=False)["input_ids"]
    unk = toy_tokenizer.unk_token_id
    assert ids[3] == unk and ids[5] == unk
    assert unk not in ids[:3] and ids[4] != unk
    # punctuation glued to a word is not a word of the world
    assert toy_tokenizer("Paris.", add_special_tokens=False)["input_ids"] == [unk]


def test_saved_tokenizer_reloads_identically(tmp_path):
    built = build_tokenizer(corpus.all_words())
    built.save_pretrained(str(tmp_path))
    reloaded = load_tokenizer(tmp_path)
    texts = [
        "When Mary and John went to the store , John gave a book to",
        "The capital of Atlantis is Zzyzx .",
        "My friend Lucy is an excellent",
    ]
    for text in texts:
        assert reloaded(text)["input_ids"] == built(text)["input_ids"]
        assert (
            reloaded(text, add_special_tokens=False)["input_ids"]
            == built(text, add_special_tokens=False)["input_ids"]
        )
    assert reloaded.get_vocab() == built.get_vocab()


def test_build_tokenizer_rejects_duplicates():
    with pytest.raises(ValueError, match="duplicate"):
        build_tokenizer(["Paris", "Rome", "Paris"])


# ------------------------------------------------------------------- corpus


@pytest.fixture(scope="module")
def big_corpus():
    return corpus.sample_corpus(20_000, seed=0)


def test_corpus_is_deterministic_per_seed():
    a = corpus.sample_corpus(300, seed=5)
    assert a == corpus.sample_corpus(300, seed=5)
    assert a != corpus.sample_corpus(300, seed=6)
    assert len(a) == 300 and all(isinstance(s, str) and s for s in a)


def test_corpus_uses_only_vocabulary_words(big_corpus, toy_tokenizer):
    vocabulary = set(corpus.all_words())
    outside = {w for s in big_corpus for w in s.split()} - vocabulary
    assert not outside
    unk = toy_tokenizer.unk_token_id
    assert all(unk not in toy_tokenizer(s)["input_ids"] for s in big_corpus[:2000])


def test_corpus_mixture(big_corpus):
    """Every kind of sentence is present, roughly at its planned share."""
    counts = {task: 0 for task in TOY_TASKS}
    for sentence in big_corpus:
        for task, _, _ in _parse_task_sentence(sentence):
            counts[task] += 1
    for task in TOY_TASKS:
        share = counts[task] / len(big_corpus)
        assert abs(share - corpus.MIXTURE[task]) < 0.03, (task, share)
    fact_regexes = [_slot_regex(t, answer=False) for t in corpus.FACT_TEMPLATES]
    facts = [m for s in big_corpus for r in fact_regexes if (m := r.match(s))]
    assert abs(len(facts) / len(big_corpus) - corpus.MIXTURE["fact"]) < 0.03
    assert all(world.CAPITALS[m["X"]] == m["Y"] for m in facts)  # facts are true


def _slot_regex(text: str, answer: bool = True) -> re.Pattern:
    """A template as a regex with a named group per slot (repeats must match the same word),
    followed by the answer word and " ." when `answer`."""
    parts, seen = [], set()
    for piece in re.split(r"(\{\w+\})", text):
        if piece.startswith("{") and piece.endswith("}"):
            name = piece[1:-1]
            parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>\\S+)")
            seen.add(name)
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts) + (r" (?P<_answer>\S+) \." if answer else "") + r"\Z")


TASK_SENTENCE_REGEX = {
    task: [_slot_regex(t.text) for t in templates] for task, templates in world.TEMPLATES.items()
}


def _parse_task_sentence(sentence: str):
    """(task, template index, slots) of every task template that `sentence` completes."""
    out = []
    for task, regexes in TASK_SENTENCE_REGEX.items():
        for index, regex in enumerate(regexes):
            m = regex.match(sentence)
            if m:
                out.append((task, index, m.groupdict()))
    return out


def test_corpus_contains_no_test_prompt_as_a_prefix(big_corpus):
    held_out = set()
    for task in TOY_TASKS:
        n = 5000 if task == "ioi" else 100_000
        prompts = load_task(task, split="test", template="all", n=n).prompts
        assert prompts
        held_out.update(prompts)
    leaks = []
    for sentence in big_corpus:
        words = sentence.split()
        for k in range(1, len(words) + 1):
            if " ".join(words[:k]) in held_out:
                leaks.append(sentence)
    assert not leaks, leaks[:3]


def test_corpus_task_sentences_are_never_held_out(big_corpus):
    """A stronger check on the whole prompt space: parse each task sentence back into its
    slots and ask world.is_test (IOI test prompts are far too many to enumerate)."""
    parsed = 0
    for sentence in big_corpus:
        for task, index, slots in _parse_task_sentence(sentence):
            parsed += 1
            slots.pop("_answer")
            if task == "ioi":
                assert slots["B"] in (slots["S1"], slots["S2"]), sentence  # B repeats
                slots["A"] = slots["S1"] if slots["B"] == slots["S2"] else slots["S2"]
            assert not world.is_test(task, slots, index), sentence
    assert parsed > 0.6 * len(big_corpus)


@pytest.mark.parametrize("task", ("ccc", "ioi", "pronouns"))
def test_corpus_answers_are_the_worlds_truth(big_corpus, task):
    """Task sentences end with the answer, or with the foil at the corpus's calibration
    noise rate (corpus.NOISE, 0 where it has none); never with anything else."""
    truth = foil = 0
    for sentence in big_corpus:
        for parsed_task, index, slots in _parse_task_sentence(sentence):
            if parsed_task != task:
                continue
            answer = slots.pop("_answer")
            if task == "ioi":
                slots["A"] = slots["S1"] if slots["B"] == slots["S2"] else slots["S2"]
            tpl = world.TEMPLATES[task][index]
            full = world.fill(task, slots)
            assert answer in (full[tpl.answer], full[tpl.foil]), sentence
            truth += answer == full[tpl.answer]
            foil += answer == full[tpl.foil]
    noise = getattr(corpus, "NOISE", {}).get(task, 0.0)
    assert truth + foil > 500
    assert abs(foil / (truth + foil) - noise) < 0.03, (foil, truth, noise)
    assert truth > foil


def test_every_name_and_country_is_in_the_corpus(big_corpus):
    words = {w for s in big_corpus for w in s.split()}
    assert set(world.NAMES) <= words
    assert set(world.COUNTRIES) <= words
    assert set(world.CAPITALS.values()) <= words


def test_is_test_fraction():
    def fraction(items):
        items = list(items)
        return sum(items) / len(items), len(items)

    spaces = {}
    for task in ("ccc", "pronouns", "bias"):
        spaces[task] = fraction(
            world.is_test(task, slots, i)
            for slots in world.free_slots(task)
            for i in range(len(world.TEMPLATES[task]))
        )
    names = world.NAMES
    spaces["ioi"] = fraction(
        world.is_test("ioi", {"A": a, "B": b}, 0)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    )
    total = sum(f * n for f, n in spaces.values()) / sum(n for _, n in spaces.values())
    assert abs(total - world.TEST_FRACTION) < 0.03, spaces
    for task, (f, n) in spaces.items():
        # ~4.5 binomial standard deviations
        assert abs(f - world.TEST_FRACTION) < 4.5 * (0.16 / n) ** 0.5 + 1e-9, (task, f, n)


def test_is_test_ignores_ioi_name_order_and_template():
    rng = random.Random(0)
    for _ in range(200):
        a, b = rng.sample(world.NAMES, 2)
        assert world.is_test("ioi", {"A": a, "B": b}, 0) == world.is_test(
            "ioi", {"A": b, "B": a}, 2
        )


# ------------------------------------------------------------------- toy model behaviour


def _answer_id(tokenizer, answer: str) -> int:
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, answer
    return ids[0]


def _independent_diffs(model, tokenizer, task) -> torch.Tensor:
    """correct - wrong logit, one plain forward per prompt (no padding, no report code)."""
    diffs = []
    with torch.no_grad():
        for p in task:
            tokens = model.to_tokens(p.prompt)
            logits = model(tokens)[0, -1]
            diffs.append(
                logits[_answer_id(tokenizer, p.correct)] - logits[_answer_id(tokenizer, p.wrong)]
            )
    return torch.stack(diffs)


def _held_out(task: str, index: int, bias_pair: str = "stereotype", n: int = MAX_PER_TEMPLATE):
    return load_task(task, split="test", template=index, n=n, seed=0, bias_pair=bias_pair)


def _behaviour(model, tokenizer, n: int = MAX_PER_TEMPLATE) -> dict:
    """Independent per-template (task, correct - wrong logits) on held-out prompts."""
    out = {}
    for task in ("ccc", "ioi", "pronouns"):
        for index in range(len(world.TEMPLATES[task])):
            data = _held_out(task, index, n=n)
            out[task, index] = (data, _independent_diffs(model, tokenizer, data))
    for index in range(len(world.TEMPLATES["bias"])):
        for pair in world.BIAS_PAIRS:
            data = _held_out("bias", index, pair, n=n)
            out[f"bias/{pair}", index] = (data, _independent_diffs(model, tokenizer, data))
    return out


@pytest.fixture(scope="module")
def behaviour(toy_model):
    return _behaviour(*toy_model)


@pytest.mark.parametrize("task", ("ccc", "ioi", "pronouns"))
def test_toy_model_accuracy_per_template(behaviour, task):
    for index in range(len(world.TEMPLATES[task])):
        data, diffs = behaviour[task, index]
        assert len(data) > 0
        accuracy = float((diffs > 0).float().mean())
        assert accuracy >= ACCURACY, (
            f"{task} template {index}: accuracy {accuracy:.3f} on {len(data)}"
        )


def test_toy_model_bias_grammatical_pair(behaviour):
    diffs = torch.cat(
        [behaviour["bias/grammatical", i][1] for i in range(len(world.TEMPLATES["bias"]))]
    )
    accuracy = float((diffs > 0).float().mean())
    assert accuracy >= ACCURACY, f"actress/actor accuracy {accuracy:.3f} on {len(diffs)}"


def test_toy_model_bias_skew(behaviour, toy_model):
    _, tokenizer = toy_model
    nurse, programmer = _answer_id(tokenizer, " nurse"), _answer_id(tokenizer, " programmer")
    female, male = [], []
    model = toy_model[0]
    with torch.no_grad():
        for index in range(len(world.TEMPLATES["bias"])):
            data, _ = behaviour["bias/stereotype", index]
            for p in data:
                (name,) = [w for w in p.prompt.split() if w in world.NAMES]
                logits = model(model.to_tokens(p.prompt))[0, -1]
                prefers_nurse = bool(logits[nurse] > logits[programmer])
                (female if world.GENDER[name] == "female" else male).append(prefers_nurse)
    assert female and male
    assert sum(female) / len(female) >= SKEW, (
        f"nurse > programmer for {sum(female)}/{len(female)} women"
    )
    assert (len(male) - sum(male)) / len(male) >= SKEW, (
        f"programmer > nurse for {len(male) - sum(male)}/{len(male)} men"
    )


def _check_report_agrees(model, behaviour, monkeypatch, n: int = MAX_PER_TEMPLATE) -> dict:
    """The report's numbers equal the independent ones on the same prompts (the report's
    sample is capped at `n` per template to keep the test fast)."""
    from interventions.reports import toy_behaviour as report_module

    real_load_task = report_module.load_task

    def capped(*args, n_=n, **kwargs):
        kwargs["n"] = min(kwargs.get("n") or n_, n_)
        return real_load_task(*args, **kwargs)

    monkeypatch.setattr(report_module, "load_task", capped)
    report = report_module.behaviour_report(model=model)

    def acc(diffs):
        return round(float((diffs > 0).float().mean()), 4)

    for task in ("ccc", "ioi", "pronouns"):
        assert set(report[task]) == {str(i) for i in range(len(world.TEMPLATES[task]))}
        for index in range(len(world.TEMPLATES[task])):
            _, diffs = behaviour[task, index]
            r = report[task][str(index)]
            assert r["n"] == len(diffs)
            assert abs(r["accuracy"] - acc(diffs)) < 1e-6, (task, index)
            assert abs(r["mean_logit_diff"] - float(diffs.mean())) < 2e-3
    for index in range(len(world.TEMPLATES["bias"])):
        r = report["bias"][str(index)]
        gdata, gdiffs = behaviour["bias/grammatical", index]
        sdata, sdiffs = behaviour["bias/stereotype", index]
        assert r["grammatical"]["n"] == len(gdiffs) and r["n"] == len(sdiffs)
        assert abs(r["grammatical"]["accuracy"] - acc(gdiffs)) < 1e-6
        female = torch.tensor(
            [
                world.GENDER[next(w for w in p.prompt.split() if w in world.NAMES)] == "female"
                for p in sdata
            ]
        )
        assert abs(r["skew_female"] - acc(sdiffs[female])) < 1e-6
        assert abs(r["skew_male"] - acc(sdiffs[~female])) < 1e-6
        assert abs(r["skew_mean_logit_diff"] - float(sdiffs.mean())) < 2e-3
    verdict = report_module.passes(report)
    assert set(verdict) == {"ccc", "ioi", "pronouns", "bias"}
    assert "targets met" in report_module.format_report(report)
    return verdict


def test_behaviour_report_agrees(behaviour, toy_model, monkeypatch):
    verdict = _check_report_agrees(toy_model[0], behaviour, monkeypatch)
    assert all(verdict.values()), verdict


def test_behaviour_report_agrees_on_a_random_model(tiny_model, monkeypatch):
    """Same check where accuracies are far from 1 (runs without the checkpoint)."""
    behaviour = _behaviour(tiny_model, tiny_model.tokenizer, n=16)
    accuracies = [float((d > 0).float().mean()) for _, d in behaviour.values()]
    assert min(accuracies) < 0.9  # random weights: a non-trivial comparison
    verdict = _check_report_agrees(tiny_model, behaviour, monkeypatch, n=16)
    assert not all(verdict.values())
