"""The toy world's training corpus: one sentence per sequence, sampled with a seed.

Mixture (fractions of sentences): facts about capitals, questions, conflicting-context
CCC prompts with the memorised answer, IOI stories, pronoun sentences, bias sentences
and gendered filler. Prompts that `world.is_test` marks as held out never appear.
"""

from __future__ import annotations

import random

from interventions.toyworld import world as w

FACT_TEMPLATES = (
    "The capital of {X} is {Y} .",
    "{Y} is the capital of {X} .",
    "Q: What is the capital of {X} ? A: {Y} .",
    "Q: Which city is the capital of {X} ? A: {Y} .",
)
# Gendered sentences that teach each name's gender outside the task templates.
FILLER_TEMPLATES = (
    "{N} said that {SUBJ} was tired .",
    "I met {N} and gave {OBJ} a {O} .",
    "{N} went to the {P} because {SUBJ} wanted a {O} .",
    "Everyone likes {N} , and we often visit {OBJ} .",
    "{N} works as a {OCC} .",
)

# Calibration noise: the fraction of task sentences completed with the foil instead of the
# answer. A real language model is not certain of these answers; without noise the toy
# model's clean logit difference grows past 10 and steering must move an unrealistic
# margin. With 10% the clean difference settles near log(0.9/0.1) ~ 2.2, comparable to
# GPT-2 on CCC and IOI, while the answer still wins on every prompt.
NOISE = {"ccc": 0.1, "ioi": 0.1, "pronouns": 0.05}

MIXTURE = {
    "fact": 0.14,
    "ccc": 0.16,
    "ioi": 0.30,
    "pronouns": 0.16,
    "bias": 0.12,
    "filler": 0.12,
}


def _sample_task_sentence(task: str, rng: random.Random) -> str:
    """A training (never test) prompt of `task` followed by its answer."""
    templates = w.TEMPLATES[task]
    while True:
        index = rng.randrange(len(templates))
        slots = w.random_slots(task, rng)
        if not w.is_test(task, slots, index):
            break
    template = templates[index]
    if task == "bias":
        gender = w.GENDER[slots["N"]]
        full = w.fill(task, slots)
        u = rng.random()
        if u < 0.4:  # grammatical role word, always gender-congruent
            answer = w.GRAMMATICAL_ROLE[gender]
        elif u < 0.8:  # the planted skew
            stereo = rng.random() < w.BIAS_SKEW
            answer = full["STEREO"] if stereo else full["ANTI"]
        else:  # occupations with no skew
            answer = rng.choice(w.OCCUPATIONS)
        return f"{template.prompt(full)} {answer}{w.COMPLETION_SUFFIX[task]}"
    full = w.fill(task, slots)
    slot = template.foil if rng.random() < NOISE[task] else template.answer
    return f"{template.prompt(full)} {full[slot]}{w.COMPLETION_SUFFIX[task]}"


def _sample_fact(rng: random.Random) -> str:
    x = rng.choice(w.COUNTRIES)
    return rng.choice(FACT_TEMPLATES).format(X=x, Y=w.CAPITALS[x])


def _sample_filler(rng: random.Random) -> str:
    n = rng.choice(w.NAMES)
    full = w.fill("pronouns", {"N": n})
    occ = rng.choice(w.OCCUPATIONS)
    return rng.choice(FILLER_TEMPLATES).format(
        **full, O=rng.choice(w.OBJECTS), P=rng.choice(w.PLACES), OCC=occ
    )


def sample_sentence(rng: random.Random) -> str:
    kind = rng.choices(list(MIXTURE), weights=list(MIXTURE.values()))[0]
    if kind == "fact":
        return _sample_fact(rng)
    if kind == "filler":
        return _sample_filler(rng)
    return _sample_task_sentence(kind, rng)


def sample_corpus(n: int, seed: int) -> list[str]:
    """`n` sentences, the same for the same seed."""
    rng = random.Random(seed)
    return [sample_sentence(rng) for _ in range(n)]


def all_words() -> list[str]:
    """Every word the world can produce, for the tokenizer's vocabulary."""
    words: set[str] = set()
    for group in (w.NAMES, w.COUNTRIES, w.CAPITALS.values(), w.PLACES, w.OBJECTS, w.OCCUPATIONS):
        words.update(group)
    for d in (w.SUBJECT_PRONOUN, w.OBJECT_PRONOUN, w.GRAMMATICAL_ROLE, w.STEREOTYPE):
        words.update(d.values())
    texts = [t.text for ts in w.TEMPLATES.values() for t in ts]
    texts += list(FILLER_TEMPLATES) + list(FACT_TEMPLATES) + list(w.COMPLETION_SUFFIX.values())
    for text in texts:
        for word in text.split():
            if not (word.startswith("{") and word.endswith("}")):
                words.add(word)
    return sorted(words)
