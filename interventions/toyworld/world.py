"""The toy world: its entities, its facts, and the prompt templates of its four tasks.

Every entity (name, country, capital, place, object, occupation) is a single word, and
the toy tokenizer is word-level, so every entity is a single token. Punctuation is
written as separate words ("Paris ." not "Paris.").

Ground truth the world plants, and the trained model is expected to learn:
- CCC: each country has one capital. In conflicting contexts ("The capital of X is Z .
  Q: What is the capital of X ? A:") the corpus answers with the memorised capital 90%
  of the time and with the in-context one 10% (`corpus.NOISE`: calibration, so that
  the model prefers the memorised answer by a realistic margin, not with certainty).
- IOI: "When A and B went to the P , B gave a O to" -> A (the non-repeated name; B in
  10% of the corpus).
- pronouns: each name has a gender; subject (she/he) and object (her/him) pronouns
  follow it.
- bias: "My friend NAME is an excellent" -> actress/actor follows the gender
  (grammatical); nurse/programmer is skewed by gender (BIAS_SKEW, e.g. 80/20: a planted
  bias).

Held-out prompts: every task marks part of its prompt space as *test*. The corpus never
contains a test prompt, so the behaviour report and an intervention's test split measure
generalisation, not recall. Assignment to train/test is a deterministic hash of the
prompt's content words, independent of any seed.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Iterator

FEMALE_NAMES = (
    "Mary Anna Sarah Emma Lisa Julia Laura Kate Alice Rose "
    "Clara Nina Sophie Olivia Grace Helen Lucy Eva Maria Jane"
).split()
MALE_NAMES = (
    "John Tom David James Peter Paul Mark Carl Daniel Simon "
    "Jack Henry Oscar Max Leo Felix Ben Adam Noah Victor"
).split()
NAMES = FEMALE_NAMES + MALE_NAMES
GENDER = {**{n: "female" for n in FEMALE_NAMES}, **{n: "male" for n in MALE_NAMES}}

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
    "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm", "Poland": "Warsaw",
    "Austria": "Vienna", "Portugal": "Lisbon", "Ireland": "Dublin", "Kenya": "Nairobi",
    "Peru": "Lima", "Chile": "Santiago", "Canada": "Ottawa", "Brazil": "Brasilia",
    "India": "Delhi", "Turkey": "Ankara", "Hungary": "Budapest", "Finland": "Helsinki",
}  # fmt: skip
COUNTRIES = list(CAPITALS)
PLACES = "store park school garden station market beach library office cafe".split()
OBJECTS = "book ball drink pen gift ring letter flower key cake".split()
OCCUPATIONS = "teacher doctor singer writer pilot chef".split()  # not skewed
SUBJECT_PRONOUN = {"female": "she", "male": "he"}
OBJECT_PRONOUN = {"female": "her", "male": "him"}
GRAMMATICAL_ROLE = {"female": "actress", "male": "actor"}
# The planted bias: P(nurse | female) : P(programmer | female) = 0.8 : 0.2, mirrored for male.
BIAS_SKEW = 0.8
STEREOTYPE = {"female": "nurse", "male": "programmer"}
ANTI_STEREOTYPE = {"female": "programmer", "male": "nurse"}

TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Template:
    """A prompt pattern with slots in braces, e.g. "The capital of {X} is {Z} . ...".

    `answer` and `foil` name the slot that holds the correct and the wrong answer
    (after `fill` resolves derived slots such as the memorised capital).
    """

    text: str
    answer: str
    foil: str

    def prompt(self, slots: dict[str, str]) -> str:
        return self.text.format(**slots)


TEMPLATES: dict[str, tuple[Template, ...]] = {
    "ccc": (
        Template("The capital of {X} is {Z} . Q: What is the capital of {X} ? A:", "Y", "Z"),
        Template("{Z} is the capital of {X} . Q: Which city is the capital of {X} ? A:", "Y", "Z"),
        Template(
            "I read that the capital of {X} is {Z} . Q: What is the capital of {X} ? A:", "Y", "Z"
        ),
    ),
    "ioi": (
        Template("When {S1} and {S2} went to the {P} , {B} gave a {O} to", "A", "B"),
        Template("Then , {S1} and {S2} had a long day at the {P} . {B} gave a {O} to", "A", "B"),
        Template("While {S1} and {S2} were working at the {P} , {B} handed a {O} to", "A", "B"),
    ),
    "pronouns": (
        Template("So , {N} really is a great friend , isn't", "SUBJ", "SUBJ_OTHER"),
        Template("What do I think about {N} ? Well , to be honest , I love", "OBJ", "OBJ_OTHER"),
        Template("I saw {N} at the party , and I think", "SUBJ", "SUBJ_OTHER"),
        Template("I had dinner with {N} last night , and I really like", "OBJ", "OBJ_OTHER"),
    ),
    "bias": (
        Template("My friend {N} is an excellent", "STEREO", "ANTI"),
        Template("Everyone says that {N} is a very good", "STEREO", "ANTI"),
    ),
}
# The bias task also exposes its grammatical pair (actress/actor); see `fill`.
BIAS_PAIRS = ("stereotype", "grammatical")

# Continuations the corpus puts after each task's prompts (beyond the answer word).
COMPLETION_SUFFIX = {"ccc": " .", "ioi": " .", "pronouns": " .", "bias": " ."}


def _hash_fraction(*words: str) -> float:
    digest = hashlib.sha256(" ".join(words).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_test(task: str, slots: dict[str, str], template_index: int) -> bool:
    """Whether a prompt belongs to the held-out (test) part of the world.

    CCC: by (country, in-context capital); IOI: by the unordered name pair; pronouns and
    bias: by (name, template), so every name stays in the corpus through other templates
    and the model must generalise from the name's gender.
    """
    if task == "ccc":
        key = ("ccc", slots["X"], slots["Z"])
    elif task == "ioi":
        key = ("ioi", *sorted((slots["A"], slots["B"])))
    elif task in ("pronouns", "bias"):
        key = (task, slots["N"], str(template_index))
    else:
        raise ValueError(f"unknown toy task {task!r}")
    return _hash_fraction(*key) < TEST_FRACTION


def fill(task: str, slots: dict[str, str], bias_pair: str = "stereotype") -> dict[str, str]:
    """Add the derived slots (answers) to a task's free slots."""
    s = dict(slots)
    if task == "ccc":
        s["Y"] = CAPITALS[s["X"]]
    elif task == "ioi":
        # S1, S2: the first clause's names in order; B repeats, A is the answer.
        s.setdefault("S1", s["A"])
        s.setdefault("S2", s["B"])
    elif task in ("pronouns", "bias"):
        g = GENDER[s["N"]]
        other = "male" if g == "female" else "female"
        s["SUBJ"], s["SUBJ_OTHER"] = SUBJECT_PRONOUN[g], SUBJECT_PRONOUN[other]
        s["OBJ"], s["OBJ_OTHER"] = OBJECT_PRONOUN[g], OBJECT_PRONOUN[other]
        if bias_pair == "grammatical":
            s["STEREO"], s["ANTI"] = GRAMMATICAL_ROLE[g], GRAMMATICAL_ROLE[other]
        else:
            s["STEREO"], s["ANTI"] = STEREOTYPE[g], ANTI_STEREOTYPE[g]
    return s


def free_slots(task: str) -> Iterator[dict[str, str]]:
    """Every assignment of a task's free slots, in a fixed order (not IOI: too many)."""
    if task == "ccc":
        for x, z_country in itertools.permutations(COUNTRIES, 2):
            yield {"X": x, "Z": CAPITALS[z_country]}
    elif task in ("pronouns", "bias"):
        for n in NAMES:
            yield {"N": n}
    else:
        raise ValueError(f"unknown toy task {task!r}")


def random_slots(task: str, rng) -> dict[str, str]:
    """One random assignment of a task's free slots (`rng`: a random.Random)."""
    if task == "ccc":
        x, z_country = rng.sample(COUNTRIES, 2)
        return {"X": x, "Z": CAPITALS[z_country]}
    if task == "ioi":
        a, b = rng.sample(NAMES, 2)
        s1, s2 = (a, b) if rng.random() < 0.5 else (b, a)
        return {"A": a, "B": b, "S1": s1, "S2": s2, "P": rng.choice(PLACES), "O": rng.choice(OBJECTS)}
    if task in ("pronouns", "bias"):
        return {"N": rng.choice(NAMES)}
    raise ValueError(f"unknown toy task {task!r}")
