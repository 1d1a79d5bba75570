"""load_task: toy-task splits, templates, bias pairs, user files, and every validation error."""

from __future__ import annotations

import json
import re
import warnings

import pytest
from conftest import toy_records, write_csv, write_jsonl

from interventions.errors import InterventionsError, TaskError
from interventions.tasks import DataPoint, Task, load_task
from interventions.tasks.files import split_of
from interventions.toyworld import world

TOY_TASKS = ("ccc", "ioi", "pronouns", "bias")
SPLITS = ("train", "val", "test")
# Large enough to take every point of the enumerable tasks; IOI is sampled.
ALL = 100_000


def _n_for(task: str) -> int:
    return 2000 if task == "ioi" else ALL


def _key(points) -> list[tuple[str, str, str]]:
    return [(p.prompt, p.correct, p.wrong) for p in points]


# --------------------------------------------------------------------------- toy tasks


@pytest.mark.parametrize("task", TOY_TASKS)
def test_toy_splits_are_disjoint_and_non_empty(task):
    prompts = {}
    for split in SPLITS:
        t = load_task(task, split=split, template="all", n=_n_for(task))
        assert isinstance(t, Task) and t.split == split and t.name == task
        assert len(t) > 0, f"{task} {split} is empty"
        assert all(isinstance(p, DataPoint) for p in t)
        prompts[split] = set(t.prompts)
        assert len(prompts[split]) == len(t), "duplicate prompts inside one split"
    assert not prompts["train"] & prompts["val"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["val"] & prompts["test"]


@pytest.mark.parametrize("task", ("ccc", "pronouns", "bias"))
def test_toy_splits_cover_the_enumerable_prompt_space(task):
    """Every prompt of the space lands in exactly one split, test by world.is_test."""
    per_split = {s: load_task(task, split=s, template="all", n=ALL) for s in SPLITS}
    expected = set()
    expected_test = set()
    for slots in world.free_slots(task):
        for index, template in enumerate(world.TEMPLATES[task]):
            prompt = template.prompt(world.fill(task, slots))
            expected.add(prompt)
            if world.is_test(task, slots, index):
                expected_test.add(prompt)
    got = set().union(*(set(t.prompts) for t in per_split.values()))
    assert got == expected
    assert set(per_split["test"].prompts) == expected_test


@pytest.mark.parametrize("task", TOY_TASKS)
@pytest.mark.parametrize("split", SPLITS)
def test_toy_tasks_are_deterministic(task, split):
    a = load_task(task, split=split, template="all", n=40, seed=3)
    b = load_task(task, split=split, template="all", n=40, seed=3)
    assert _key(a) == _key(b)
    assert a == b


@pytest.mark.parametrize("task", TOY_TASKS)
def test_different_seed_gives_different_sample(task):
    pool = load_task(task, split="train", template="all", n=_n_for(task))
    n = min(20, len(pool) // 2)
    a = load_task(task, split="train", template="all", n=n, seed=0)
    b = load_task(task, split="train", template="all", n=n, seed=1)
    assert len(a) == len(b) == n
    assert set(a.prompts) != set(b.prompts)
    if task != "ioi":  # enumerable: a sample of the full pool
        assert set(a.prompts) <= set(pool.prompts)
        assert set(b.prompts) <= set(pool.prompts)


@pytest.mark.parametrize("task", ("ccc", "pronouns", "bias"))
def test_n_caps_the_number_of_points(task):
    pool = load_task(task, split="train", template=0, n=ALL)
    assert len(load_task(task, split="train", template=0, n=5)) == 5
    # n larger than the pool: everything, no error
    assert len(load_task(task, split="train", template=0, n=len(pool) + 50)) == len(pool)


def test_default_n_is_512():
    assert len(load_task("ccc", split="train", template="all")) == 512
    assert len(load_task("ioi", split="train", template=0)) == 512


def _template_regex(text: str) -> re.Pattern:
    pattern = re.escape(text)
    pattern = re.sub(r"\\\{\w+\\\}", r"\\S+", pattern)
    return re.compile(pattern + r"\Z")


def _templates_matching(task: str, prompt: str) -> list[int]:
    return [
        i for i, tpl in enumerate(world.TEMPLATES[task]) if _template_regex(tpl.text).match(prompt)
    ]


@pytest.mark.parametrize("task", TOY_TASKS)
def test_template_index_is_respected(task):
    for index in range(len(world.TEMPLATES[task])):
        t = load_task(task, split="train", template=index, n=64)
        assert len(t) > 0
        assert t.template == str(index)
        for p in t:
            assert _templates_matching(task, p.prompt) == [index], p.prompt


@pytest.mark.parametrize("task", TOY_TASKS)
def test_template_list_and_all(task):
    count = len(world.TEMPLATES[task])
    both = load_task(task, split="train", template=[0, count - 1], n=ALL if task != "ioi" else 400)
    used = {_templates_matching(task, p.prompt)[0] for p in both}
    assert used == {0, count - 1}
    everything = load_task(task, split="train", template="all", n=_n_for(task))
    assert {_templates_matching(task, p.prompt)[0] for p in everything} == set(range(count))
    comma = load_task(task, split="train", template=f"0,{count - 1}", n=50, seed=2)
    listed = load_task(task, split="train", template=[0, count - 1], n=50, seed=2)
    assert _key(comma) == _key(listed)


@pytest.mark.parametrize("task", TOY_TASKS)
def test_template_all_mixes_token_lengths(task, toy_tokenizer):
    """Each template has one token length (single-word slots); "all" mixes them."""
    t = load_task(task, split="train", template="all", n=_n_for(task))
    assert len({len(toy_tokenizer(p)["input_ids"]) for p in t.prompts}) > 1
    one = load_task(task, split="train", template=0, n=64)
    assert len({len(toy_tokenizer(p)["input_ids"]) for p in one.prompts}) == 1


@pytest.mark.parametrize("task", TOY_TASKS)
def test_toy_answers_follow_the_world(task):
    t = load_task(task, split="test", template="all", n=_n_for(task) if task != "ioi" else 200)
    for p in t:
        assert p.correct.startswith(" ") and p.wrong.startswith(" ")
        correct, wrong = p.correct.strip(), p.wrong.strip()
        assert correct != wrong
        words = p.prompt.split()
        if task == "ccc":
            country = words[words.index("of") + 1]
            assert correct == world.CAPITALS[country]
            assert wrong in words and wrong in world.CAPITALS.values()
        elif task == "ioi":
            names = [w for w in words if w in world.NAMES]
            # S1, S2 then B (repeated); the answer is the name said once
            assert len(names) == 3 and names[2] == wrong and names.count(correct) == 1
        else:
            (name,) = [w for w in words if w in world.NAMES]
            gender = world.GENDER[name]
            if task == "pronouns":
                assert correct in (world.SUBJECT_PRONOUN[gender], world.OBJECT_PRONOUN[gender])
            else:
                assert correct == world.STEREOTYPE[gender]
                assert wrong == world.ANTI_STEREOTYPE[gender]


def test_bias_grammatical_pair_is_actress_actor():
    t = load_task("bias", split="train", template="all", bias_pair="grammatical", n=ALL)
    stereo = load_task("bias", split="train", template="all", bias_pair="stereotype", n=ALL)
    assert t.prompts == stereo.prompts
    seen = set()
    for p in t:
        (name,) = [w for w in p.prompt.split() if w in world.NAMES]
        if world.GENDER[name] == "female":
            assert (p.correct, p.wrong) == (" actress", " actor")
        else:
            assert (p.correct, p.wrong) == (" actor", " actress")
        seen.add(p.correct)
    assert seen == {" actress", " actor"}
    assert {p.correct for p in stereo} == {" nurse", " programmer"}


def test_toy_tasks_validate_against_a_tokenizer(toy_tokenizer):
    t = load_task("ccc", split="val", template="all", tokenizer=toy_tokenizer, n=50)
    assert len(t) == 50
    assert "dropped_multi_token_answers" not in t.info


def test_toy_task_drops_multi_token_answers_for_a_bpe_tokenizer(bpe_tokenizer):
    with pytest.warns(UserWarning, match="not single"):
        t = load_task("ccc", split="test", template=0, tokenizer=bpe_tokenizer, n=ALL)
    dropped = t.info["dropped_multi_token_answers"]
    assert dropped and " Nairobi" in dropped  # several tokens, as for GPT-2 (tests/bpe.py)
    for p in t:
        assert len(bpe_tokenizer(p.correct, add_special_tokens=False)["input_ids"]) == 1
        assert len(bpe_tokenizer(p.wrong, add_special_tokens=False)["input_ids"]) == 1
    full = load_task("ccc", split="test", template=0, n=ALL)
    assert len(t) + len(dropped) == len(full)


# ------------------------------------------------------------------- unknown names


def test_unknown_task():
    with pytest.raises(TaskError, match="unknown task 'nope'.*ccc"):
        load_task("nope")


def test_unknown_split():
    with pytest.raises(TaskError, match="unknown split 'dev'.*train, val, test"):
        load_task("ccc", split="dev")


@pytest.mark.parametrize("task", TOY_TASKS)
def test_unknown_template_index(task):
    count = len(world.TEMPLATES[task])
    with pytest.raises(TaskError, match=rf"template={count} does not exist.*0\.\.{count - 1}"):
        load_task(task, template=count)
    with pytest.raises(TaskError, match="does not exist"):
        load_task(task, template=-1)


def test_template_that_is_not_an_index():
    with pytest.raises(TaskError, match=r"'first'.*is not a template index.*0\.\.2"):
        load_task("ccc", template="first")


def test_unknown_bias_pair():
    with pytest.raises(TaskError, match="unknown bias_pair 'gender'.*grammatical"):
        load_task("bias", bias_pair="gender")


def test_task_errors_are_value_errors_and_interventions_errors():
    with pytest.raises(ValueError):
        load_task("ccc", split="dev")
    with pytest.raises(InterventionsError):
        load_task("ccc", split="dev")


# ------------------------------------------------------------------- user files


def _load_all_splits(name, path, **kwargs):
    return {s: load_task(name, split=s, path=str(path), **kwargs) for s in SPLITS}


def test_jsonl_round_trip(tmp_path, toy_tokenizer):
    records = toy_records(60)
    path = write_jsonl(tmp_path / "data.jsonl", records)
    splits = _load_all_splits("jsonl", path, tokenizer=toy_tokenizer)
    got = [p for s in SPLITS for p in splits[s]]
    assert sorted(_key(got)) == sorted((r["prompt"], r["correct"], r["wrong"]) for r in records)
    for s in SPLITS:
        assert all(split_of(p.prompt) == s for p in splits[s])
        # file order is kept inside a split
        order = [r["prompt"] for r in records if split_of(r["prompt"]) == s]
        assert splits[s].prompts == order
    assert not set(splits["train"].prompts) & set(splits["test"].prompts)


def test_csv_round_trip_keeps_leading_spaces_and_commas(tmp_path, toy_tokenizer):
    records = toy_records(40)
    records[0] = {
        "prompt": 'A prompt , with "quotes" , and commas',
        "correct": " Paris",
        "wrong": " Rome",
    }
    path = write_csv(tmp_path / "data.csv", records)
    splits = _load_all_splits("csv", path, tokenizer=toy_tokenizer)
    got = [p for s in SPLITS for p in splits[s]]
    assert sorted(_key(got)) == sorted((r["prompt"], r["correct"], r["wrong"]) for r in records)
    assert any(p.correct == " Paris" and p.prompt.startswith("A prompt ,") for p in got)


def test_csv_and_jsonl_agree(tmp_path):
    records = toy_records(30)
    j = write_jsonl(tmp_path / "d.jsonl", records)
    c = write_csv(tmp_path / "d.csv", records)
    for s in SPLITS:
        assert _key(load_task("jsonl", split=s, path=str(j))) == _key(
            load_task("csv", split=s, path=str(c))
        )


def test_file_hash_split_fractions(tmp_path):
    records = toy_records(2000)
    path = write_jsonl(tmp_path / "big.jsonl", records)
    sizes = {s: len(load_task("jsonl", split=s, path=str(path))) for s in SPLITS}
    assert sum(sizes.values()) == 2000
    assert abs(sizes["train"] / 2000 - 0.7) < 0.05
    assert abs(sizes["val"] / 2000 - 0.1) < 0.03
    assert abs(sizes["test"] / 2000 - 0.2) < 0.04


def test_file_n_and_seed(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", toy_records(300))
    a = load_task("jsonl", split="train", path=str(path), n=20, seed=0)
    b = load_task("jsonl", split="train", path=str(path), n=20, seed=0)
    c = load_task("jsonl", split="train", path=str(path), n=20, seed=1)
    assert len(a) == 20 and _key(a) == _key(b)
    assert set(a.prompts) != set(c.prompts)


def test_split_placeholder_in_path(tmp_path):
    for s, count in (("train", 7), ("val", 3), ("test", 5)):
        write_jsonl(tmp_path / f"mine_{s}.jsonl", toy_records(count, prefix=f"{s} item"))
    pattern = str(tmp_path / "mine_{split}.jsonl")
    for s, count in (("train", 7), ("val", 3), ("test", 5)):
        t = load_task("jsonl", split=s, path=pattern)
        assert len(t) == count  # the whole file, not a hash split of it
        assert all(p.prompt.startswith(f"{s} item") for p in t)


def test_split_placeholder_missing_file(tmp_path):
    write_jsonl(tmp_path / "only_train.jsonl", toy_records(3))
    with pytest.raises(TaskError, match="only_val.jsonl does not exist"):
        load_task("jsonl", split="val", path=str(tmp_path / "only_{split}.jsonl"))


def test_file_task_needs_a_path():
    with pytest.raises(TaskError, match="needs a file"):
        load_task("jsonl")


def test_unknown_file_type(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    with pytest.raises(TaskError, match="unknown file type '.txt'"):
        load_task("jsonl", path=str(path))


# ------------------------------------------------------------------- validation errors


@pytest.fixture
def one_record_file(tmp_path):
    """Write one jsonl record that lands in the train split; returns a writer."""

    def write(correct, wrong, prompt_base="Where is it ?"):
        # choose a prompt the hash puts in "train"
        for i in range(100):
            prompt = f"{prompt_base} {i}"
            if split_of(prompt) == "train":
                break
        return write_jsonl(
            tmp_path / "one.jsonl", [{"prompt": prompt, "correct": correct, "wrong": wrong}]
        )

    return write


def _pieces(tokenizer, text: str) -> list[str]:
    return [tokenizer.decode([i]) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def test_answer_without_leading_space_is_not_a_single_bpe_token(one_record_file, bpe_tokenizer):
    assert len(_pieces(bpe_tokenizer, " Egypt")) == 1 and len(_pieces(bpe_tokenizer, "Egypt")) > 1
    path = one_record_file("Egypt", " Paris")
    with pytest.raises(TaskError) as info:
        load_task("jsonl", path=str(path), tokenizer=bpe_tokenizer)
    message = str(info.value)
    pieces = _pieces(bpe_tokenizer, "Egypt")
    assert "'Egypt'" in message and "not a single token" in message
    assert str(pieces) in message and f"{len(pieces)} tokens" in message
    assert "leading space" in message and "' Egypt'" in message
    ok = load_task("jsonl", path=str(one_record_file(" Egypt", " Paris")), tokenizer=bpe_tokenizer)  # the fix passes
    assert ok[0].correct == " Egypt"


def test_wrong_answer_is_validated_too(one_record_file, bpe_tokenizer):
    path = one_record_file(" Paris", " Nairobi")
    with pytest.raises(TaskError) as info:
        load_task("jsonl", path=str(path), tokenizer=bpe_tokenizer)
    message = str(info.value)
    pieces = _pieces(bpe_tokenizer, " Nairobi")
    assert "' Nairobi'" in message and str(pieces) in message and f"{len(pieces)} tokens" in message
    assert "leading space" not in message  # no single-token spelling exists


def test_answer_with_superfluous_leading_space(one_record_file, bpe_tokenizer):
    # "ness" alone is one token, " ness" is not: the hint goes the other way
    assert len(_pieces(bpe_tokenizer, "ness")) == 1 and len(_pieces(bpe_tokenizer, " ness")) == 2
    path = one_record_file(" ness", " Paris")
    with pytest.raises(TaskError, match="' ness'.*2 tokens.*without the leading space 'ness' is one token"):
        load_task("jsonl", path=str(path), tokenizer=bpe_tokenizer)


def test_the_hints_name_gpt2s_own_token_pieces(one_record_file, gpt2_tokenizer):
    """The same hints with GPT-2's real vocabulary (skipped where it is absent, as on a clone)."""
    with pytest.raises(TaskError) as info:
        load_task("jsonl", path=str(one_record_file("Berlin", " Paris")), tokenizer=gpt2_tokenizer)
    assert "['Ber', 'lin']" in str(info.value) and "leading space" in str(info.value)
    with pytest.raises(TaskError, match=r"\[' N', 'airo', 'bi'\].*3 tokens"):
        load_task("jsonl", path=str(one_record_file(" Paris", " Nairobi")), tokenizer=gpt2_tokenizer)


def test_multi_word_answer_with_toy_tokenizer(one_record_file, toy_tokenizer):
    path = one_record_file(" Paris France", " Rome")
    with pytest.raises(
        TaskError, match=r"' Paris France'.*not a single token.*\['Paris', 'France'\]"
    ):
        load_task("jsonl", path=str(path), tokenizer=toy_tokenizer)


def test_answer_validation_uses_the_model_tokenizer(one_record_file, tiny_model):
    path = one_record_file(" Paris France", " Rome")
    with pytest.raises(TaskError, match="not a single token"):
        load_task("jsonl", path=str(path), model=tiny_model)


def test_correct_equals_wrong(one_record_file):
    path = one_record_file(" Paris", " Paris")
    with pytest.raises(TaskError, match="correct and wrong answers are both ' Paris'"):
        load_task("jsonl", path=str(path))


def test_correct_and_wrong_same_token(one_record_file, toy_tokenizer):
    # the word-level toy tokenizer ignores the leading space
    path = one_record_file(" Paris", "Paris")
    with pytest.raises(TaskError, match="are the same token"):
        load_task("jsonl", path=str(path), tokenizer=toy_tokenizer)


def test_empty_prompt(tmp_path):
    write_jsonl(tmp_path / "d_train.jsonl", [{"prompt": "   ", "correct": " a", "wrong": " b"}])
    with pytest.raises(TaskError, match="empty prompt"):
        load_task("jsonl", path=str(tmp_path / "d_{split}.jsonl"))


def test_empty_jsonl(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(TaskError, match="empty.jsonl holds no data points"):
        load_task("jsonl", path=str(path))


def test_empty_split_of_a_small_file(tmp_path):
    records = [r for r in toy_records(40) if split_of(r["prompt"]) != "val"][:5]
    path = write_jsonl(tmp_path / "small.jsonl", records)
    with pytest.raises(TaskError, match=r"has 5 data points, and its split by prompt hash .* left none for val"):
        load_task("jsonl", split="val", path=str(path))


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = toy_records(3)
    path.write_text(
        json.dumps(good[0]) + "\n" + json.dumps(good[1]) + "\n" + '{"prompt": "x", "correct":\n'
    )
    with pytest.raises(TaskError, match=r"bad\.jsonl line 3: not valid JSON"):
        load_task("jsonl", path=str(path))


def test_blank_lines_do_not_shift_line_numbers(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(toy_records(1)[0]) + "\n\n" + "not json\n")
    with pytest.raises(TaskError, match="line 3"):
        load_task("jsonl", path=str(path))


def test_missing_field(tmp_path):
    records = toy_records(3)
    del records[1]["wrong"]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(TaskError, match=r"line 2: missing field 'wrong'"):
        load_task("jsonl", path=str(path))


def test_null_field_counts_as_missing(tmp_path):
    records = toy_records(2)
    records[0]["correct"] = None
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(TaskError, match=r"line 1: missing field 'correct'"):
        load_task("jsonl", path=str(path))


def test_non_string_field(tmp_path):
    records = toy_records(2)
    records[1]["correct"] = 3
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(TaskError, match=r"line 2: field 'correct' must be a string, got 3"):
        load_task("jsonl", path=str(path))


def test_record_not_an_object(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('["a", "b", "c"]\n')
    with pytest.raises(TaskError, match="line 1: expected an object"):
        load_task("jsonl", path=str(path))


def test_csv_with_wrong_header(tmp_path):
    path = write_csv(tmp_path / "d.csv", toy_records(3), header=("text", "correct", "wrong"))
    with pytest.raises(TaskError) as info:
        load_task("csv", path=str(path))
    message = str(info.value)
    assert "header" in message and "prompt, correct, wrong" in message and "'text'" in message


def test_empty_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("")
    with pytest.raises(TaskError, match="header"):
        load_task("csv", path=str(path))


def test_csv_short_row_is_a_missing_field(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,correct,wrong\nhello there, a, b\nonly a prompt, a\n")
    with pytest.raises(TaskError, match="line 3: missing field 'wrong'"):
        load_task("csv", path=str(path))


def test_missing_file(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        load_task("jsonl", path=str(tmp_path / "nope.jsonl"))


def test_duplicate_prompts_warn(tmp_path):
    records = toy_records(3) * 2
    write_jsonl(tmp_path / "d_train.jsonl", records)
    with pytest.warns(UserWarning, match=r"3 duplicate prompts.*x2"):
        t = load_task("jsonl", path=str(tmp_path / "d_{split}.jsonl"))
    assert len(t) == 6  # kept, only warned about


def test_no_warning_without_duplicates(tmp_path):
    write_jsonl(tmp_path / "d_train.jsonl", toy_records(5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_task("jsonl", path=str(tmp_path / "d_{split}.jsonl"))


# ------------------------------------------------------------------- fixed length


def test_fixed_length_unequal_lengths(tiny_model):
    with pytest.raises(TaskError) as info:
        load_task("ccc", model=tiny_model, split="train", template="all", n=200, fixed_length=True)
    message = str(info.value)
    expected = {}
    for p in load_task("ccc", split="train", template="all", n=200):
        length = tiny_model.to_tokens(p.prompt).shape[1]
        expected[length] = expected.get(length, 0) + 1
    assert len(expected) > 1
    histogram = ", ".join(f"{k} tokens: {v}" for k, v in sorted(expected.items()))
    assert f"({histogram})" in message
    assert "dynscalar" in message


def test_fixed_length_equal_lengths(tiny_model):
    t = load_task("ioi", model=tiny_model, split="train", template=0, n=30, fixed_length=True)
    assert t.info["length"] == tiny_model.to_tokens(t[0].prompt).shape[1]


def test_fixed_length_in_a_user_file(tmp_path, tiny_model):
    records = [
        {"prompt": "The capital of France is", "correct": " Paris", "wrong": " Rome"},
        {"prompt": "The capital of", "correct": " France", "wrong": " Italy"},
    ]
    write_jsonl(tmp_path / "d_train.jsonl", records)
    with pytest.raises(TaskError, match=r"\(4 tokens: 1, 6 tokens: 1\).*dynscalar"):
        load_task(
            "jsonl", model=tiny_model, path=str(tmp_path / "d_{split}.jsonl"), fixed_length=True
        )


def test_fixed_length_with_only_a_tokenizer(toy_tokenizer):
    with pytest.raises(TaskError, match="unequal token lengths"):
        load_task(
            "ccc", split="train", template="all", n=200, tokenizer=toy_tokenizer, fixed_length=True
        )


def test_csv_with_a_byte_order_mark(tmp_path):
    path = write_csv(tmp_path / "excel.csv", toy_records(20))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    points = [p for s in SPLITS for p in load_task("csv", split=s, path=str(path))]
    assert len(points) == 20
