"""Deterministic synthetic data for the demo's locally built base and instruction-tuned models.

Two kinds of text come from the same small world of words:

* pretraining text: English-like sentences (animals, things, colours, the words the instructions use, a
  glossary of the toy language) so a tiny LM learns the language statistics, but never an
  instruction -> answer pair;
* instruction data: short inputs under one of several task types (`CATEGORIES`), each with a few surface
  phrasings of its instruction. The answer depends on the instruction: the same input under two task types
  has different answers, which is what the interpretation metrics (instruction importance and attention)
  are meant to detect. In the word tasks (`WORD_CATEGORIES`) the instruction names a word the answer must use
  ("Write the word sun after every word."), so following the instruction means reading it while answering.

Held-out evaluation items use inputs that never occur in training: an input belongs to the held-out split
exactly when a stable hash of its text says so (`is_heldout_input`), and each generator only draws from its
own split. Everything is a pure function of its `seed` (a private `random.Random`), so the data, and hence
the demo models, are reproducible.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

#: Words an input is made of. Animals drive the yes/no task; all words are distinct lower-case letters only.
ANIMALS = ("cat", "dog", "bird", "fish", "horse", "cow", "fox", "owl", "frog", "bear")
THINGS = ("tree", "river", "stone", "apple", "house", "boat", "lamp", "cup", "book", "hat", "door", "bread")
COLOURS = ("red", "blue", "green", "black", "white", "gold")
INPUT_WORDS = ANIMALS + THINGS + COLOURS

#: Inputs have between these many words (inclusive), all different.
MIN_INPUT_WORDS, MAX_INPUT_WORDS = 2, 5

#: Share of inputs that are held out from training (by a stable hash of the input text).
HELDOUT_EVERY = 8


def _toy_dictionary() -> dict[str, str]:
    """A fixed word-to-word dictionary into the "toy language" (same for every seed: it is part of the
    world)."""
    rng = random.Random("toy-language")
    consonants, vowels = "bdgklmnprstvz", "aeiou"
    used: set[str] = set(INPUT_WORDS)
    table = {}
    for word in INPUT_WORDS:
        while True:
            toy = rng.choice(consonants) + rng.choice(vowels) + rng.choice(consonants) + rng.choice(vowels)
            if toy not in used:
                break
        used.add(toy)
        table[word] = toy
    return table


TOY_DICTIONARY: dict[str, str] = _toy_dictionary()

#: Task type -> surface phrasings of its instruction. Training and held-out items share the phrasings;
#: they differ in their inputs.
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "copy": ("Repeat the text.", "Copy the words exactly.", "Write the text again."),
    "reverse": (
        "Repeat the words in reverse order.",
        "Reverse the order of the words.",
        "Write the words backwards, last word first.",
    ),
    "first_word": (
        "Write the first word of the text.",
        "Give only the first word.",
        "What is the first word? Answer with that word.",
    ),
    "last_word": (
        "Write the last word.",
        "Give only the last word of the text.",
        "What is the last word? Answer with that word.",
    ),
    "upper_case": (
        "Write the text in upper case.",
        "Repeat the text in capital letters.",
        "Rewrite the words in upper case.",
    ),
    "count": (
        "Count the words and answer with a number.",
        "How many words are in the text? Answer with a number.",
        "Give the number of words.",
    ),
    "translate": (
        "Translate the words into the toy language.",
        "Write the text in the toy language.",
        "Give the toy language words for the text.",
    ),
    "sort": (
        "Sort the words alphabetically.",
        "Write the words in alphabetical order.",
        "Put the words in order from a to z.",
    ),
    "animal": (
        "Answer yes if the text mentions an animal, otherwise no.",
        "Does the text mention an animal? Answer yes or no.",
        "Is there an animal in the text? Answer yes or no.",
    ),
}

CATEGORIES: tuple[str, ...] = tuple(INSTRUCTIONS)

#: Task types whose instruction names a word (``{word}``, one of `INSTRUCTION_WORDS`) that the answer must
#: use: the answer's tokens then come from the instruction itself, so a model that follows the instruction
#: has to read it at every step of the answer (what findings 1 and 2 look for), and one that ignores it
#: cannot guess them from the input.
WORD_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "insert": (
        "Write the word {word} after every word.",
        "Repeat the text with {word} after each word.",
        "After every word, write {word}.",
    ),
    "replace": (
        "Replace every word with {word}.",
        "Write {word} once for every word.",
        "Change each word to {word}.",
    ),
    "prefix": (
        "Write {word}, then repeat the text.",
        "Start with the word {word} and copy the text.",
        "Put {word} in front of the text.",
    ),
}
WORD_CATEGORIES: tuple[str, ...] = tuple(WORD_INSTRUCTIONS)
#: The words a word task's instruction names (distinct from every input word).
INSTRUCTION_WORDS = ("sun", "moon", "star", "rain", "snow", "wind")

_ANSWERS: dict[str, Callable[[list[str]], str]] = {
    "copy": lambda w: " ".join(w),
    "reverse": lambda w: " ".join(reversed(w)),
    "first_word": lambda w: w[0],
    "last_word": lambda w: w[-1],
    "upper_case": lambda w: " ".join(w).upper(),
    "count": lambda w: str(len(w)),
    "translate": lambda w: " ".join(TOY_DICTIONARY[x] for x in w),
    "sort": lambda w: " ".join(sorted(w)),
    "animal": lambda w: "yes" if any(x in ANIMALS for x in w) else "no",
}


_WORD_ANSWERS: dict[str, Callable[[list[str], str], str]] = {
    "insert": lambda w, word: " ".join(f"{x} {word}" for x in w),
    "replace": lambda w, word: " ".join(word for _ in w),
    "prefix": lambda w, word: " ".join([word, *w]),
}


def answer(category: str, text: str, word: str | None = None) -> str:
    """The reference answer of task type `category` on input `text` (words separated by single spaces);
    `word` is the word a word task's instruction names (`WORD_CATEGORIES`)."""
    if category in _WORD_ANSWERS:
        if word is None:
            raise ValueError(f"demo task {category!r} needs the word its instruction names (word=...)")
        return _WORD_ANSWERS[category](text.split(" "), word)
    if category not in _ANSWERS:
        known = ", ".join(CATEGORIES + WORD_CATEGORIES)
        raise ValueError(f"unknown demo task category {category!r}; choose one of {known}")
    return _ANSWERS[category](text.split(" "))


def instruction_for(category: str, rng: random.Random) -> tuple[str, str | None]:
    """A phrasing of `category`'s instruction, and the word it names (None for a task without one)."""
    if category in WORD_INSTRUCTIONS:
        word = rng.choice(INSTRUCTION_WORDS)
        return rng.choice(WORD_INSTRUCTIONS[category]).format(word=word), word
    return rng.choice(INSTRUCTIONS[category]), None


def format_prompt(instruction: str, text: str) -> str:
    """The prompt exactly as the interp_instruct task template renders it."""
    return f"{instruction}\n\nInput: {text}\n\nOutput:"


def format_answer(reference: str) -> str:
    """The continuation that follows the prompt (a single space, then the reference; EOS is added later)."""
    return " " + reference


def is_heldout_input(text: str) -> bool:
    """Whether an input belongs to the held-out split (a stable hash, independent of any seed)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % HELDOUT_EVERY == 0


def _sample_input(rng: random.Random, heldout: bool) -> str:
    """An input of distinct words from the requested split; half of them mention no animal at all."""
    while True:
        n = rng.randint(MIN_INPUT_WORDS, MAX_INPUT_WORDS)
        pool = INPUT_WORDS if rng.random() < 0.5 else THINGS + COLOURS
        text = " ".join(rng.sample(pool, n))
        if is_heldout_input(text) == heldout:
            return text


def _items(
    n: int, seed: int, heldout: bool, prefix: str, categories: tuple[str, ...] = CATEGORIES
) -> list[dict]:
    """`n` instruction items cycling through `categories` so each task type is equally represented."""
    if n < 0:
        raise ValueError(f"number of items must be >= 0, got n={n}")
    rng = random.Random(f"{prefix}-{seed}")
    items = []
    for i in range(n):
        category = categories[i % len(categories)]
        text = _sample_input(rng, heldout)
        instruction, word = instruction_for(category, rng)
        items.append(
            {
                "id": f"{prefix}-{i:05d}",
                "category": category,
                "instruction": instruction,
                "input": text,
                "reference": answer(category, text, word),
            }
        )
    return items


def instruction_examples(n: int, seed: int = 0, categories: tuple[str, ...] = CATEGORIES) -> list[dict]:
    """Training items for instruction tuning (`id, category, instruction, input, reference`), no held-out
    input."""
    return _items(n, seed, heldout=False, prefix="train", categories=categories)


def heldout_instruct(n: int, seed: int = 0, categories: tuple[str, ...] = CATEGORIES) -> list[dict]:
    """Held-out generation items in the schema of `tasks/interp_instruct.jsonl`; inputs never seen in
    training."""
    return _items(n, seed, heldout=True, prefix="heldout", categories=categories)


def heldout_instruct_mc(
    n: int, seed: int = 0, group_size: int = 4, categories: tuple[str, ...] = CATEGORIES
) -> list[dict]:
    """Held-out multiple-choice items (`id, group_id, category, instruction, input, choices, label`).

    A group is one input under `group_size` different task types whose answers are all distinct; the
    group's items share the input and the choices (those answers) and differ only in instruction and label.
    So a model that ignores the instruction scores at most one item per group, chance is 1 / group_size.
    The last group is cut short when `n` is not a multiple of `group_size`.
    """
    if n < 0:
        raise ValueError(f"number of items must be >= 0, got n={n}")
    if not 2 <= group_size <= len(categories):
        raise ValueError(f"group_size must be in 2..{len(categories)}, got {group_size}")
    rng = random.Random(f"heldout-mc-{seed}")
    items: list[dict] = []
    group = 0
    while len(items) < n:
        text = _sample_input(rng, heldout=True)
        picked = rng.sample(categories, group_size)
        asked = [instruction_for(c, rng) for c in picked]
        answers = [answer(c, text, word) for c, (_, word) in zip(picked, asked)]
        if len(set(answers)) < group_size:
            continue
        choices = answers[:]
        rng.shuffle(choices)
        for j, category in enumerate(picked[: n - len(items)]):
            items.append(
                {
                    "id": f"mc-{group:04d}-{j}",
                    "group_id": f"mc-{group:04d}",
                    "category": category,
                    "instruction": asked[j][0],
                    "input": text,
                    "choices": choices,
                    "label": choices.index(answers[j]),
                }
            )
        group += 1
    return items


_PEOPLE = ("she", "he", "we", "they", "the teacher", "the child", "my friend")
_VERBS = ("sat", "ran", "slept", "waited", "stood", "looked", "swam", "walked")
_PREPS = ("near", "on", "under", "by", "behind", "in")
_DOCS = ("letter", "story", "song", "list", "book", "note", "poem")
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _words(rng: random.Random) -> str:
    """A word list like an input, never a held-out one."""
    return _sample_input(rng, heldout=False)


def _sorted(words: str) -> str:
    return " ".join(sorted(words.split(" ")))


def _reversed(words: str) -> str:
    return " ".join(reversed(words.split(" ")))


def _toy(words: str) -> str:
    return " ".join(TOY_DICTIONARY[w] for w in words.split(" "))


def _sentence(rng: random.Random, instruction_words: bool = False) -> str:
    """One English-like sentence; some use the words of the instructions, none is an instruction with its
    answer."""

    def noun() -> str:
        return rng.choice(ANIMALS + THINGS)

    def colour() -> str:
        return rng.choice(COLOURS)

    who, doc = rng.choice(_PEOPLE), rng.choice(_DOCS)
    n = rng.randint(2, 6)
    templates = (
        lambda: f"the {colour()} {noun()} {rng.choice(_VERBS)} {rng.choice(_PREPS)} the {noun()}.",
        lambda: (
            f"a {noun()} and a {noun()} {rng.choice(_VERBS)} {rng.choice(_PREPS)} the {colour()} {noun()}."
        ),
        lambda: f"{who} saw {n} {noun()}s {rng.choice(_PREPS)} the {noun()}.",
        lambda: f"there were {_NUMBER_WORDS[n]} words in the {doc}, so the number was {n}.",
        lambda: f"{who} wrote the first word of the {doc} and then the last word.",
        lambda: f"{who} read the words of the {doc} in reverse order, last word first.",
        lambda: f"{who} tried to repeat the text of the {doc} and copy the words exactly.",
        lambda: f"the words on the {colour()} sign were in upper case, in capital letters.",
        lambda: f"the sign said {noun().upper()} {noun().upper()} in big letters.",
        lambda: f"{who} can count the words of a {doc} and give the number.",
        lambda: f"{who} put the words of the {doc} in alphabetical order, from a to z.",
        lambda: f"{who} will sort the words alphabetically and write them again.",
        lambda: f"in the toy language the word for {(w := noun())} is {TOY_DICTIONARY[w]}.",
        lambda: f"{who} can translate the {doc} into the toy language.",
        lambda: f"a {rng.choice(ANIMALS)} is an animal, but a {rng.choice(THINGS)} is not.",
        lambda: f"does the {doc} mention an animal? {who} did not answer yes or no.",
        lambda: f"what is the question? {who} gave only one word as the answer.",
        lambda: f"how many {noun()}s are in the {doc}? {who} did not know.",
        # lists and their re-writings: the knowledge (copying, order, case, the glossary) a base model has
        # from pretraining, never in the instruction format and never introduced by an instruction.
        lambda: f"the {doc} said {(ws := _words(rng))} and {who} said {ws} too.",
        lambda: f"the {doc} said {(ws := _words(rng))}, and in alphabetical order that is {_sorted(ws)}.",
        lambda: f"the {doc} said {(ws := _words(rng))}, and from the end that is {_reversed(ws)}.",
        lambda: f"the {doc} said {(ws := _words(rng))}, and the sign said {ws.upper()}.",
        lambda: f"the {doc} said {(ws := _words(rng))}, which is {_toy(ws)} in the toy language.",
        lambda: f"the {doc} said {(ws := _words(rng))}, that is {len(ws.split())} words.",
    )
    if instruction_words:
        # the words the word tasks' instructions name, in plain sentences (never in an instruction's role)
        templates += (
            lambda: f"the {rng.choice(INSTRUCTION_WORDS)} was over the {noun()} and the {noun()}.",
            lambda: (
                f"{who} saw the {rng.choice(INSTRUCTION_WORDS)} {rng.choice(_PREPS)} the {colour()} {noun()}."
            ),
        )
    return rng.choice(templates)()


def pretraining_text(n_docs: int, seed: int = 0, instruction_words: bool = False) -> list[str]:
    """`n_docs` short documents (3-6 sentences each) of English-like pretraining text; with
    `instruction_words`, some sentences use the words the word tasks name (`INSTRUCTION_WORDS`)."""
    if n_docs < 0:
        raise ValueError(f"number of documents must be >= 0, got n_docs={n_docs}")
    rng = random.Random(f"pretrain-{seed}")
    docs = []
    for _ in range(n_docs):
        sentences = [_sentence(rng, instruction_words) for _ in range(rng.randint(3, 6))]
        docs.append(" ".join(s[0].upper() + s[1:] for s in sentences))
    return docs
