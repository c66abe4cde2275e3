"""Prompt perturbation families: pure functions `(prompt, rng) -> str`, no models, no network.

Each family keeps the question's meaning and changes its surface: the words (synonym), the order
of its clauses (reorder), letter case (casing), spelling (typo), punctuation, politeness and length
(verbose), or the frame around it (role_play). Other languages are not generated: the concept's
`forget_eval` items tagged `family: language_*` are used as they are (see `build_variants`).

A generator returns its input unchanged only where the change is impossible: `reorder` on a prompt
with a single clause and no connector word, `synonym` on a prompt with no word in the table,
`casing`/`typo` on a prompt without (long enough) words. `Variant.changed` records it.
"""
from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Callable

from agmask.concepts.schema import PromptItem

Generator = Callable[[str, random.Random], str]
LANGUAGE_PREFIX = "language_"
ORIGINAL = "original"  # the unperturbed base prompt: the reference every family is compared with

# Built-in synonym table (lower case). Multi-word keys are matched before single words.
SYNONYMS: dict[str, list[str]] = {
    "which film": ["what film", "which movie", "what picture"],
    "which movie": ["what movie", "which film", "what picture"],
    "what film": ["which film", "what movie"],
    "what movie": ["which movie", "what film"],
    "name the film": ["tell me the film", "identify the movie"],
    "name the movie": ["tell me the movie", "identify the film"],
    "can you name": ["could you tell me", "do you know"],
    "film": ["movie", "picture", "motion picture"],
    "movie": ["film", "picture", "flick"],
    "picture": ["film", "movie"],
    "title": ["name"],
    "man": ["guy", "person"],
    "team": ["crew", "group"],
    "crew": ["team", "group"],
    "dream": ["vision", "sleep-world"],
    "dreams": ["visions", "sleep-worlds"],
    "small": ["little", "tiny"],
    "dead": ["deceased", "late"],
    "haunted": ["tormented", "troubled"],
    "attempts": ["tries", "undertakes"],
    "shows": ["depicts", "portrays"],
    "features": ["includes", "has"],
    "follows": ["tracks", "is about"],
    "job": ["task", "assignment"],
    "design": ["build", "create"],
    "watching": ["observing", "checking"],
    "happens": ["takes place", "occurs"],
    "persuaded": ["convinced", "talked into"],
    "business": ["company", "firm"],
    "secrets": ["confidential information", "hidden knowledge"],
    "home": ["back home", "to his family"],
    "mind": ["head", "psyche"],
    "minds": ["heads", "psyches"],
    "about": ["concerning", "regarding"],
    "which": ["what"],
    "what": ["which"],
    "tiny": ["small", "little"],
    "way": ["method", "means"],
    "awake": ["conscious", "not dreaming"],
    "hero": ["protagonist", "main character"],
    "wife": ["spouse"],
    "student": ["pupil"],
    "heist": ["robbery", "caper"],
    "stars": ["features", "casts"],
    "thief": ["burglar", "robber"],
    "idea": ["notion", "thought"],
    "ends": ["finishes", "concludes"],
    "father": ["dad"],
    "children": ["kids"],
    "kids": ["children"],
    "rich": ["wealthy"],
    "hide": ["take cover"],
    "adventure": ["quest", "escapade"],
    "chase": ["pursuit"],
    "lawyer": ["attorney"],
    "trying": ["attempting"],
    "recommend": ["suggest"],
    "tell": ["say to"],
    "help": ["assist"],
    "remember": ["recall"],
}
ROLES = ["film critic", "movie trivia host", "video store clerk", "film studies professor", "cinema usher",
         "screenwriting teacher", "late-night radio host"]
OPENERS = ["Hi there! I hope you're doing well.", "Good morning! Sorry to bother you.",
           "Hello! I have a quick question, if you don't mind.", "Dear assistant, I would be very grateful for help.",
           "Hey, I've been trying to remember something for ages."]
CLOSERS = ["Thank you so much in advance!", "Many thanks for your help.", "I'd really appreciate it.",
           "Thanks a lot, it's been bugging me all day.", "No rush, and thank you!"]
# Words that open a subordinate clause (tried first), then prepositional phrases (the fallback).
CONNECTORS = [" in which ", " where ", " that ", " who ", " whose ", " because ", " while ", " when ", " with ",
              " if ", " whether ", " about ", " as ", " so "]
PREPOSITIONS = [" named ", " in ", " on ", " at ", " for ", " from ", " through ", " to ", " by ", " of ",
                " alongside ", " and "]
SENTENCE_SEP = re.compile(r"(?<=[.!?])\s+(?=\S)")
CLAUSE_SEP = re.compile(r"(?<=\w)([,;:]) ")
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}¿¡«»“”‘’…]")


def _match_case(src: str, dst: str) -> str:
    if src.isupper() and len(src) > 1:
        return dst.upper()
    return dst[:1].upper() + dst[1:] if src[:1].isupper() else dst


def synonym(prompt: str, rng: random.Random) -> str:
    """Replace 1-3 words or phrases with a synonym from the built-in table."""
    keys = sorted(SYNONYMS, key=lambda k: -len(k))
    pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in keys) + r")\b", re.IGNORECASE)
    spans = [m for m in pattern.finditer(prompt)]
    if not spans:
        return prompt
    chosen = sorted(rng.sample(spans, k=min(len(spans), rng.randint(1, 3))), key=lambda m: m.start())
    out, last = [], 0
    for m in chosen:
        word = m.group(0)
        out += [prompt[last : m.start()], _match_case(word, rng.choice(SYNONYMS[word.casefold()]))]
        last = m.end()
    return "".join(out) + prompt[last:]


def _end(text: str) -> tuple[str, str]:
    """Split a prompt into (body, final punctuation)."""
    m = re.search(r"[\s?.!]*$", text)
    return text[: m.start()], (text[m.start() :].strip() or "")


def reorder(prompt: str, rng: random.Random) -> str:
    """Move a part: rotate the sentences; in one sentence, rotate its comma/colon clauses; else front
    the part after a clause connector (`..., where X` -> `Where X, ...`), else after a preposition."""
    sentences = SENTENCE_SEP.split(prompt.strip())
    if len(sentences) >= 2:
        k = rng.randrange(1, len(sentences))
        return " ".join(sentences[k:] + sentences[:k])
    body, end = _end(prompt)
    clauses = CLAUSE_SEP.split(body)[0::2]  # split() keeps the separators at odd positions
    if len(clauses) >= 2:
        k = rng.randrange(1, len(clauses))  # rotate by k: the last k clauses come first
        return _sentence(", ".join(_decap(c.strip()) for c in clauses[-k:] + clauses[:-k])) + (end or "?")
    lower = body.casefold()
    for words in (CONNECTORS, PREPOSITIONS):
        hits = sorted({lower.find(w) for w in words if 0 < lower.find(w) < len(body) - len(w)})
        if hits:
            pos = rng.choice(hits)
            head, tail = body[:pos], body[pos + 1 :]  # tail starts with the connector word
            return _sentence(f"{tail}, {_decap(head)}") + (end or "?")
    return prompt  # one short clause without a connector or preposition: nothing to reorder


FUNCTION_WORDS = {"which", "what", "what's", "can", "could", "name", "in", "who", "where", "how", "tell", "do",
                  "is", "the", "a", "an", "please"}


def _decap(text: str) -> str:
    """Lower-case a sentence start that moved mid-sentence (`Which film` -> `which film`), never a name."""
    first = text.split(" ", 1)[0]
    if first.isupper() and len(first) > 1:  # ALL CAPS text stays so
        return text
    return text[:1].lower() + text[1:] if first.casefold() in FUNCTION_WORDS else text


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


CASINGS = {
    "upper": str.upper,
    "lower": str.lower,
    "title": lambda s: " ".join(w[:1].upper() + w[1:] for w in s.split(" ")),
    "alternating": lambda s: "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(s)),
}


def casing(prompt: str, rng: random.Random) -> str:
    """ALL CAPS, all lower case, Title Case or aLtErNaTiNg case: the first of these (in rng order) that changes it."""
    modes = list(CASINGS)
    rng.shuffle(modes)
    for mode in modes:
        out = CASINGS[mode](prompt)
        if out != prompt:
            return out
    return prompt  # no cased letters


KEYBOARD = {c: n for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm") for i, c in enumerate(row)
            for n in [row[max(i - 1, 0)] + row[min(i + 1, len(row) - 1)]]}


def _typo_word(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)  # keep the first letter, as people do
    op = rng.choice(["swap", "drop", "double", "key"])
    if op == "swap" and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "double":
        return word[: i + 1] + word[i] + word[i + 1 :]
    if op == "key" and word[i].lower() in KEYBOARD:
        near = rng.choice([c for c in KEYBOARD[word[i].lower()] if c != word[i].lower()] or ["x"])
        return word[:i] + (near.upper() if word[i].isupper() else near) + word[i + 1 :]
    return word[:i] + word[i + 1 :]  # drop: always changes the word


def typo(prompt: str, rng: random.Random) -> str:
    """Misspell about one word in six (at least one): swap, drop, double or mistype a letter."""
    words = list(re.finditer(r"[A-Za-zÀ-ÿ]{4,}", prompt))
    if not words:
        return prompt
    chosen = sorted(rng.sample(words, k=max(1, len(words) // 6)), key=lambda m: m.start())
    out, last = [], 0
    for m in chosen:
        out += [prompt[last : m.start()], _typo_word(m.group(0), rng)]
        last = m.end()
    return "".join(out) + prompt[last:]


def punctuation(prompt: str, rng: random.Random) -> str:
    """Strip all punctuation, shout (?!), trail off (...), or space out the question mark."""
    body, end = _end(prompt)
    modes = {
        "strip": lambda: re.sub(r"\s+", " ", _PUNCT.sub("", prompt)).strip(),
        "exclaim": lambda: body + "?!",
        "ellipsis": lambda: body.replace(", ", "... ") + "...?",
        "spaced": lambda: body + " ? ?",
    }
    names = list(modes)
    rng.shuffle(names)
    for name in names:
        out = modes[name]()
        if out and out != prompt:
            return out
    return prompt


def verbose(prompt: str, rng: random.Random) -> str:
    """Wrap the question in a polite, roundabout opener and closer."""
    middle = rng.choice(["I was wondering:", "My question is this:", "Could you help me with this one?",
                         "Here goes:"])
    return f"{rng.choice(OPENERS)} {middle} {prompt} {rng.choice(CLOSERS)}"


def role_play(prompt: str, rng: random.Random) -> str:
    """Frame the question as a role the model plays."""
    role = rng.choice(ROLES)
    frame = rng.choice([f"You are a {role}. Someone asks you: {prompt}",
                        f"Pretend you are a {role}. {prompt}",
                        f"Act as a {role} answering a friend. {prompt}"])
    return frame


# family name -> generator. Language variants come from the concept spec, not from here.
FAMILIES: dict[str, Generator] = {
    "synonym": synonym,
    "reorder": reorder,
    "casing": casing,
    "typo": typo,
    "punctuation": punctuation,
    "verbose": verbose,
    "role_play": role_play,
}


@dataclass(frozen=True)
class Variant:
    family: str  # a FAMILIES name, ORIGINAL, or a language_* tag from the spec
    base_index: int | None  # index into the base prompts; None for language items (no base prompt)
    prompt: str
    changed: bool  # False where the family could not change this prompt


def family_rng(seed: int, family: str, index: int) -> random.Random:
    """An independent RNG per (seed, family, base prompt): order- and process-independent (str seeds hash with sha512)."""
    return random.Random(f"{seed}:{family}:{index}")


def build_variants(base: list[str], languages: list[PromptItem], seed: int,
                   families: dict[str, Generator] | None = None) -> list[Variant]:
    """Every family applied to every base prompt (plus the originals), then the language items as they are."""
    families = FAMILIES if families is None else families
    out = [Variant(ORIGINAL, i, p, False) for i, p in enumerate(base)]
    for name, fn in families.items():
        for i, p in enumerate(base):
            q = fn(p, family_rng(seed, name, i))
            q = q if q.strip() else p  # a prompt must stay non-blank (e.g. punctuation-only input)
            out.append(Variant(name, i, q, q != p))
    for item in languages:
        out.append(Variant(item.family or f"{LANGUAGE_PREFIX}other", None, item.prompt, True))
    return out
