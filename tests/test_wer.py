"""Word and character error rates: hand-made cases, the normalisation both sides share, and the
offline recogniser on a recording of known text."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from lightning_tts.evaluation.scoring import metric_names, score_pair
from lightning_tts.metrics import char_error_rate, edit_distance, error_rate, word_error_rate
from lightning_tts.text import scoring_words

needs_espeak = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                  reason='the espeak extra is not installed (pip install "lightning_tts[espeak]")')


@pytest.mark.parametrize("hyp, expected", [
    ("the cat sat on the mat", 0.0),
    ("the dog sat on the mat", 1 / 6),  # one substitution
    ("the cat sat on mat", 1 / 6),  # one deletion
    ("the cat sat down on the mat", 1 / 6),  # one insertion
    ("", 1.0),  # empty hypothesis: every word deleted
    ("a cat sat in a hat on the mat today", 5 / 6),  # 3 substitutions + 2 insertions, over 6 reference words
])
def test_word_error_rate_hand_made_cases(hyp: str, expected: float) -> None:
    assert word_error_rate("The cat sat on the mat.", hyp) == pytest.approx(expected)


def test_error_rate_edges_and_edit_distance() -> None:
    assert error_rate([], []) == 0.0 and error_rate([], ["a"]) == 1.0
    assert word_error_rate("hello", "hello hello hello") == 2.0  # insertions can exceed the reference length
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert char_error_rate("cat", "cut") == pytest.approx(1 / 3)
    assert char_error_rate("the cat", "thecat") == pytest.approx(1 / 7)  # the lost space counts


def test_scoring_normalises_both_sides_alike() -> None:
    # numbers, abbreviations, case and punctuation are normalised by the project's own normaliser
    assert word_error_rate("Dr. Jones paid $3 on the 2nd.", "doctor jones paid three dollars on the second") == 0.0
    assert scoring_words("It's 'quoted', isn't it?") == ["it's", "quoted", "isn't", "it"]


def test_score_pair_reports_wer_only_with_a_recogniser() -> None:
    wav = torch.sin(torch.arange(8000) / 16000 * 2 * torch.pi * 150) * 0.5
    plain = score_pair(wav, wav, 16000)
    assert "wer" not in plain and list(plain) == metric_names(False)
    scored = score_pair(wav, wav, 16000, text="three green apples", transcribe=lambda _: "three red apples")
    assert list(scored) == metric_names(False, True)
    assert scored["wer"] == pytest.approx(1 / 3) and scored["cer"] == pytest.approx(3 / 18)
    with pytest.raises(ValueError, match="needs the text"):
        score_pair(wav, wav, 16000, transcribe=lambda _: "")


def test_score_pair_computes_only_the_selected_metrics() -> None:
    t = torch.arange(8000) / 16000
    ref = torch.sin(2 * torch.pi * 150 * t) * 0.5
    syn = torch.sin(2 * torch.pi * 180 * t) * 0.4 + 0.01 * torch.randn(8000, generator=torch.Generator().manual_seed(0))
    calls: list[int] = []
    similarity = lambda wav: calls.append(1) or 0.5  # noqa: E731  (counts judge calls)
    full = score_pair(ref, syn, 16000, similarity)
    assert len(calls) == 1
    only_mcd = score_pair(ref, syn, 16000, similarity, only=["mcd"])
    assert only_mcd == {"mcd": full["mcd"]} and len(calls) == 1  # the judge was not asked
    f0 = score_pair(ref, syn, 16000, only=["f0_rmse", "stoi"])
    assert list(f0) == ["stoi", "f0_rmse"] and f0 == {"stoi": full["stoi"], "f0_rmse": full["f0_rmse"]}
    assert score_pair(ref, syn, 16000, similarity, only=["speaker_sim"]) == {"speaker_sim": 0.5}
    assert score_pair(ref, syn, 16000, only=["speaker_sim", "wer"]) == {}  # neither a judge nor a recogniser


@needs_espeak
def test_recogniser_transcribes_a_recording_of_known_text() -> None:
    from lightning_tts.data.espeak import ESPEAK_SAMPLE_RATE, EspeakEngine, EspeakVoice
    from lightning_tts.evaluation.recognizer import transcribe

    text = "My sister bought three green apples."
    voice = EspeakVoice("e001", "M", "en-us", "klatt4", 50, 50, 150)
    wav = torch.from_numpy(EspeakEngine.get().render(text, voice))
    heard = transcribe(wav, ESPEAK_SAMPLE_RATE)
    assert word_error_rate(text, heard) <= 0.2, heard
    assert word_error_rate("The weather was cold and windy this week.", heard) >= 0.8


def test_a_transcript_depends_on_its_clip_alone(synthetic_root) -> None:
    """The recogniser adapts its feature normalisation to what it hears; every clip starts from a
    fresh state, so a clip transcribes the same whatever was decoded before it (as it must for the
    evaluation's worker processes, and for systems scored one after another)."""
    from lightning_tts.audio import read_audio
    from lightning_tts.evaluation.recognizer import transcribe

    clips = [read_audio(path, 16000) for path in sorted(synthetic_root.rglob("*.flac"))[:6]]
    first = [transcribe(wav, 16000) for wav in clips]
    again = [transcribe(wav, 16000) for wav in reversed(clips)][::-1]
    assert first == again and any(first)
