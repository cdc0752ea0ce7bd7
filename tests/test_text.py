"""Text front end: normalisation, phonemes with letter fallback, symbol table."""
import pytest

from lightning_tts.errors import TextError
from lightning_tts.text import SYMBOLS, TextProcessor, normalize_text, number_to_words


@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith paid $3.50.", "doctor smith paid three dollars fifty cents."),
    ("On the 21st of May, 1984", "on the twenty first of may, nineteen eighty four"),
    ("42% of 1,000,000", "forty two percent of one million"),
    ("pi is 3.14", "pi is three point one four"),
    ("Mr.  Jones   \u201cquoted\u201d", 'mister jones "quoted"'),
])
def test_normalize(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_number_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(2_000_019) == "two million nineteen"


def test_phonemes_with_letter_fallback() -> None:
    tp = TextProcessor()
    symbols = tp.decode(tp.encode("Hello, Zorblaxia!"))
    assert symbols[:4] == ["@HH", "@AH0", "@L", "@OW1"]
    assert "".join(s for s in symbols if len(s) == 1 and s.isalpha()) == "zorblaxia"


def test_letters_only_and_unknown() -> None:
    tp = TextProcessor(phonemes=False)
    assert tp.decode(tp.encode("Hi!")) == ["h", "i", "!"]
    with pytest.raises(TextError):
        tp.encode("   ")
    with pytest.raises(TextError):
        tp.encode("### ...")


def test_symbol_table_is_stable_and_unique() -> None:
    assert SYMBOLS[0] == "_" and len(SYMBOLS) == len(set(SYMBOLS))
    custom = TextProcessor(symbols=SYMBOLS[:40], phonemes=False)
    assert all(i < 40 for i in custom.encode("abc"))
