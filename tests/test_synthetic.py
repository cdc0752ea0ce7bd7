"""The procedural corpus: deterministic, VCTK layout, and speakers that differ as their parameters say."""
from pathlib import Path

import numpy as np
import torch

from lightning_tts.audio import FeatureParams, estimate_pitch, read_audio
from lightning_tts.data.corpora import VCTKCorpus
from lightning_tts.data.synthetic import build_synthetic_corpus, iter_speaker_params


def test_deterministic_and_resumable(tmp_path: Path) -> None:
    a = build_synthetic_corpus(tmp_path / "a", speakers=2, utterances=2, seed=5, workers=1, progress=False)
    b = build_synthetic_corpus(tmp_path / "b", speakers=2, utterances=2, seed=5, workers=2, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.flac"))
    assert len(files) == 4
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    (a / files[0]).unlink()
    build_synthetic_corpus(a, speakers=2, utterances=2, seed=5, workers=1, progress=False)
    assert (a / files[0]).read_bytes() == (b / files[0]).read_bytes()


def test_layout_is_read_by_the_vctk_reader(synthetic_root: Path) -> None:
    index = VCTKCorpus(synthetic_root).read()
    assert len(index.utterances) == 140 and index.skipped.total == 0
    assert {info["gender"] for info in index.speakers.values()} == {"M", "F"}


def test_measured_f0_tracks_the_true_f0(synthetic_root: Path) -> None:
    params = {p.speaker: p for p in iter_speaker_params(synthetic_root)}
    index = VCTKCorpus(synthetic_root).read()
    fp = FeatureParams()
    measured, true = [], []
    for speaker, p in params.items():
        utt = next(u for u in index.utterances if u.speaker == speaker)
        f0 = estimate_pitch(read_audio(utt.path, 16000), fp)
        measured.append(float(torch.median(f0[f0 > 0])))
        true.append(p.f0_mean)
    corr = np.corrcoef(np.log(measured), np.log(true))[0, 1]
    assert corr > 0.9, (measured, true)


def test_the_default_corpus_root_is_created_with_its_parents(tmp_path) -> None:
    """The embedded default builds at artifacts/synthetic, whose parent does not exist on a fresh clone."""
    from lightning_tts.data.synthetic import build_synthetic_corpus

    root = build_synthetic_corpus(tmp_path / "artifacts" / "synthetic", speakers=1, utterances=1, workers=1,
                                  progress=False)
    assert (root / "speaker-params.json").is_file()
