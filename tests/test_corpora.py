"""Corpus readers on trees written in the exact real layouts."""
import json
from pathlib import Path

import pytest

from conftest import write_libritts, write_ljspeech, write_manifest, write_vctk
from lightning_tts.data.corpora import LibriTTSCorpus, LJSpeechCorpus, ManifestCorpus, VCTKCorpus
from lightning_tts.errors import DataError


def test_vctk_092_mic_selection_and_speaker_info(tmp_path: Path) -> None:
    root = write_vctk(tmp_path / "VCTK-Corpus-0.92")
    index = VCTKCorpus(root, mic="mic2").read()
    assert len(index.utterances) == 12 and {u.speaker for u in index.utterances} == {"p225", "p226", "p227"}
    assert all(u.path.endswith("_mic2.flac") for u in index.utterances)
    assert index.utterances[0].utterance_id == "p225_001" and index.utterances[0].text
    assert index.speakers["p226"]["gender"] == "M"
    assert abs(index.utterances[0].duration - 0.7) < 1e-3


def test_vctk_080_layout(tmp_path: Path) -> None:
    root = write_vctk(tmp_path / "VCTK-Corpus", version="0.80")
    index = VCTKCorpus(root).read()
    assert len(index.utterances) == 12 and index.utterances[0].path.endswith("p225_001.wav")
    assert index.speakers["p225"]["gender"] == "F"  # 0.80 lists ids without the 'p'


def test_corrupt_flac_and_missing_transcript_are_skipped_and_counted(tmp_path: Path) -> None:
    root = write_vctk(tmp_path / "vctk")
    (root / "wav48_silence_trimmed" / "p225" / "p225_002_mic1.flac").write_bytes(b"fLaC\x00garbage")
    (root / "txt" / "p226" / "p226_003.txt").unlink()
    (root / "txt" / "p227" / "p227_001.txt").write_text("   \n")
    index = VCTKCorpus(root, min_duration=0.75).read()
    counts = index.skipped.counts
    assert counts["unreadable audio"] == 1 and counts["missing transcript"] == 1 and counts["empty text"] == 1
    assert counts["too short"] == 2  # the 0.7 s first utterances of p225 and p226 (p227's is empty text)
    assert len(index.utterances) == 12 - 5
    assert "skipped 5" in index.summary()
    json.dumps(index.skipped.to_dict())


def test_libritts_several_subsets(tmp_path: Path) -> None:
    root = write_libritts(tmp_path / "LibriTTS")
    index = LibriTTSCorpus(root, subsets=["train-clean-100", "train-clean-360"]).read()
    assert len(index.utterances) == 12 and len({u.speaker for u in index.utterances}) == 4
    assert index.speakers["19"]["subset"] == "train-clean-100"
    assert len(LibriTTSCorpus(root, subsets=["train-clean-100"]).read().utterances) == 6
    with pytest.raises(DataError, match="train-other-500"):
        LibriTTSCorpus(root, subsets=["train-other-500"]).read()


def test_ljspeech(tmp_path: Path) -> None:
    index = LJSpeechCorpus(write_ljspeech(tmp_path / "LJSpeech-1.1")).read()
    assert len(index.utterances) == 4 and {u.speaker for u in index.utterances} == {"LJ"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest(tmp_path: Path, fmt: str) -> None:
    index = ManifestCorpus(write_manifest(tmp_path, fmt)).read()
    assert len(index.utterances) == 6 and Path(index.utterances[0].path).is_file()


def test_manifest_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"audio": "a.wav", "speaker": "s", "text": "hi"}\n{not json\n')
    with pytest.raises(DataError, match=r"m.jsonl:2"):
        ManifestCorpus(bad).read()


def test_empty_corpus_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "wav48_silence_trimmed").mkdir()
    with pytest.raises(DataError, match="no usable utterances"):
        VCTKCorpus(tmp_path).read()
    with pytest.raises(DataError, match="does not exist"):
        VCTKCorpus(tmp_path / "nope").read()
