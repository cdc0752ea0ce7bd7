"""Meaningful English sentences for corpora that speak, written by this project's own grammar.

A small phrase-structure grammar (subjects, verbs with their past and base forms, objects, places,
times, adjectives, numbers) fills a dozen sentence templates: statements, questions, imperatives,
conditionals, reported speech and descriptions. Every word is a common English word with a CMUdict
pronunciation (``tests/test_sentences.py`` checks it), so the phoneme front end and an offline
recogniser both know it. Everything is a function of the random generator passed in.

Example::

    >>> make_sentence(np.random.default_rng(0))
    'Her grandmother wanted to check two small cups, but my little brother bought it first.'
"""
from __future__ import annotations

from typing import Callable

import numpy as np

SUBJECTS = (
    "the old farmer", "my sister", "a young doctor", "the children", "our neighbours", "the teacher",
    "his father", "her mother", "the driver", "my little brother", "the baker", "a tall woman",
    "the new student", "their uncle", "the nurse", "a quiet man", "the fishermen", "my best friend",
    "the pilot", "her grandmother", "the workers", "a small boy", "the painter", "our captain",
    "the police officer", "the gardener", "a busy lawyer", "the twins", "my cousin", "the singer",
)
# (past, base) forms of verbs that take a thing as their object
VERBS = (
    ("carried", "carry"), ("bought", "buy"), ("found", "find"), ("painted", "paint"), ("cleaned", "clean"),
    ("moved", "move"), ("sold", "sell"), ("fixed", "fix"), ("dropped", "drop"), ("opened", "open"),
    ("washed", "wash"), ("lifted", "lift"), ("hid", "hide"), ("borrowed", "borrow"), ("packed", "pack"),
    ("wrapped", "wrap"), ("counted", "count"), ("checked", "check"), ("ordered", "order"), ("kept", "keep"),
    ("brought", "bring"), ("left", "leave"), ("pushed", "push"), ("pulled", "pull"), ("watched", "watch"),
    ("noticed", "notice"), ("forgot", "forget"), ("needed", "need"), ("shared", "share"), ("picked up", "pick up"),
    ("threw", "throw"), ("chose", "choose"), ("returned", "return"), ("sent", "send"), ("showed", "show"),
)
OBJECTS = (
    "a wooden chair", "the heavy boxes", "three green apples", "a bright red kite", "the kitchen table",
    "an old letter", "the blue bicycle", "a basket of bread", "the broken clock", "two small cups",
    "the garden gate", "a pair of shoes", "the silver key", "a bag of rice", "the yellow blanket",
    "four fresh eggs", "the fishing boat", "a warm coat", "the paper map", "a jar of honey",
    "the black piano", "some cold water", "the front door", "a stack of books", "the winter boots",
    "a box of matches", "the orange truck", "six glass bottles", "the thick rope", "a loaf of cheese bread",
    "the brown horse", "a bunch of flowers", "the round mirror", "a sharp knife", "the school bus",
)
PLACES = (
    "near the river", "in the morning market", "behind the old church", "across the busy street",
    "at the train station", "into the kitchen", "under the bridge", "along the north road",
    "outside the bank", "by the lake", "through the forest", "on the top shelf", "in the village",
    "at the end of the hall", "beside the fire", "over the hill", "down to the harbour", "up the stairs",
)
TIMES = (
    "before the storm", "after lunch", "on Sunday morning", "last winter", "every evening", "at midnight",
    "early this morning", "late in the afternoon", "during the summer", "the next day", "before dinner",
    "on a cold night", "in the spring", "after the meeting", "this week", "two days ago",
)
ADJECTIVES = (
    "warm", "quiet", "cold", "dark", "bright", "clean", "noisy", "empty", "busy", "calm", "wet", "dry",
    "strange", "pleasant", "beautiful", "crowded", "peaceful", "windy", "cheerful", "heavy",
)
PLACE_NOUNS = (
    "kitchen", "station", "garden", "harbour", "library", "market", "village", "office", "classroom",
    "theatre", "hospital", "river", "beach", "museum", "valley", "hotel",
)
WEATHER = ("rains", "snows", "gets dark", "turns cold", "stays sunny")


def _pick(rng: np.random.Generator, options: tuple) -> object:
    """One option, drawn uniformly."""
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    """Capitalise the first letter only (keeps names and 'Sunday')."""
    return text[:1].upper() + text[1:]


def _statement(rng: np.random.Generator) -> str:
    return f"{_cap(_pick(rng, SUBJECTS))} {_pick(rng, VERBS)[0]} {_pick(rng, OBJECTS)} {_pick(rng, PLACES)}."


def _fronted_time(rng: np.random.Generator) -> str:
    return f"{_cap(_pick(rng, TIMES))}, {_pick(rng, SUBJECTS)} {_pick(rng, VERBS)[0]} {_pick(rng, OBJECTS)}."


def _long_statement(rng: np.random.Generator) -> str:
    return (f"{_cap(_pick(rng, SUBJECTS))} {_pick(rng, VERBS)[0]} {_pick(rng, OBJECTS)} "
            f"{_pick(rng, PLACES)} {_pick(rng, TIMES)}.")


def _question(rng: np.random.Generator) -> str:
    return f"Did {_pick(rng, SUBJECTS)} {_pick(rng, VERBS)[1]} {_pick(rng, OBJECTS)} {_pick(rng, PLACES)}?"


def _why_question(rng: np.random.Generator) -> str:
    return f"Why did {_pick(rng, SUBJECTS)} {_pick(rng, VERBS)[1]} {_pick(rng, OBJECTS)} {_pick(rng, TIMES)}?"


def _future(rng: np.random.Generator) -> str:
    return f"{_cap(_pick(rng, SUBJECTS))} will {_pick(rng, VERBS)[1]} {_pick(rng, OBJECTS)} {_pick(rng, TIMES)}."


def _imperative(rng: np.random.Generator) -> str:
    return f"Please {_pick(rng, VERBS)[1]} {_pick(rng, OBJECTS)} {_pick(rng, PLACES)}."


def _conditional(rng: np.random.Generator) -> str:
    return (f"If it {_pick(rng, WEATHER)} {_pick(rng, TIMES)}, {_pick(rng, SUBJECTS)} will "
            f"{_pick(rng, VERBS)[1]} {_pick(rng, OBJECTS)}.")


def _reported(rng: np.random.Generator) -> str:
    return (f"{_cap(_pick(rng, SUBJECTS))} said that the {_pick(rng, PLACE_NOUNS)} was "
            f"{_pick(rng, ADJECTIVES)} {_pick(rng, TIMES)}.")


def _description(rng: np.random.Generator) -> str:
    first, second = rng.choice(len(ADJECTIVES), size=2, replace=False)
    return f"The {_pick(rng, PLACE_NOUNS)} was {ADJECTIVES[first]} and {ADJECTIVES[second]} {_pick(rng, TIMES)}."


def _contrast(rng: np.random.Generator) -> str:
    return (f"{_cap(_pick(rng, SUBJECTS))} wanted to {_pick(rng, VERBS)[1]} {_pick(rng, OBJECTS)}, "
            f"but {_pick(rng, SUBJECTS)} {_pick(rng, VERBS)[0]} it first.")


def _sequence(rng: np.random.Generator) -> str:
    return (f"{_cap(_pick(rng, SUBJECTS))} {_pick(rng, VERBS)[0]} {_pick(rng, OBJECTS)} and then "
            f"went {_pick(rng, PLACES)}.")


TEMPLATES: tuple[Callable[[np.random.Generator], str], ...] = (
    _statement, _fronted_time, _long_statement, _question, _why_question, _future, _imperative,
    _conditional, _reported, _description, _contrast, _sequence,
)


def make_sentence(rng: np.random.Generator) -> str:
    """One sentence, capitalised and punctuated, drawn from a random template."""
    return TEMPLATES[int(rng.integers(len(TEMPLATES)))](rng)


def vocabulary() -> set[str]:
    """Every word the grammar can produce, lower case (for dictionary checks)."""
    phrases = [*SUBJECTS, *OBJECTS, *PLACES, *TIMES, *ADJECTIVES, *PLACE_NOUNS, *WEATHER,
               *(form for verb in VERBS for form in verb)]
    fixed = "did why will please if it said that the was and but wanted to first then went".split()
    return {w.lower() for phrase in phrases for w in phrase.split()} | set(fixed)
