"""The judges of speaker similarity: the pretrained resemblyzer GE2E encoder tells held-out voices
apart (eSpeak NG voices, procedural synthetic voices), equals resemblyzer's own pipeline, survives
clips without voice; ``build_judge`` selects resemblyzer, a checkpoint or nothing; ``embed`` takes it."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_tts.audio import read_audio
from lightning_tts.callbacks.fewshot import FewShotConfig
from lightning_tts.data.corpora import Utterance, VCTKCorpus
from lightning_tts.embeddings import embed_split
from lightning_tts.errors import LightningTTSError
from lightning_tts.evaluation import judges
from lightning_tts.evaluation.judges import (Embedder, build_judge, judge_checkpoint, judge_record,
                                             resemblyzer_embedder)

SAMPLE_RATE = 16000
needs_espeak = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                  reason='the espeak extra is not installed (pip install "lightning_tts[espeak]")')


@pytest.fixture(scope="module")
def judge() -> Embedder:
    return resemblyzer_embedder(SAMPLE_RATE)


@pytest.fixture(scope="module")
def espeak_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four eSpeak NG voices x three sentences of their own."""
    if importlib.util.find_spec("espeakng_loader") is None:
        pytest.skip('the espeak extra is not installed (pip install "lightning_tts[espeak]")')
    from lightning_tts.data.espeak import EspeakConfig, build_espeak_corpus

    return build_espeak_corpus(tmp_path_factory.mktemp("judge") / "espeak",
                               EspeakConfig(speakers=4, utterances=3, shared=0, seed=0), workers=2, progress=False)


def _first(root: Path, speakers: int, per_speaker: int) -> list[Utterance]:
    """The first ``per_speaker`` utterances (by id) of the first ``speakers`` speakers of a VCTK-layout corpus."""
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for utt in sorted(VCTKCorpus(root).read().utterances, key=lambda u: u.utterance_id):
        by_speaker[utt.speaker].append(utt)
    return [u for s in sorted(by_speaker)[:speakers] for u in by_speaker[s][:per_speaker]]


def _same_and_different(embed: Embedder, utterances: list[Utterance]) -> tuple[float, float]:
    """Mean cosine of same-speaker pairs and of different-speaker pairs."""
    vectors = torch.stack([embed(read_audio(u.path, SAMPLE_RATE)) for u in utterances]).numpy()  # (N, 256)
    speakers = np.asarray([u.speaker for u in utterances])
    i, j = np.triu_indices(len(utterances), k=1)
    cosines, same = (vectors @ vectors.T)[i, j], speakers[i] == speakers[j]
    return float(cosines[same].mean()), float(cosines[~same].mean())


@needs_espeak
def test_resemblyzer_tells_espeak_voices_apart(judge, espeak_root: Path) -> None:
    same, different = _same_and_different(judge, _first(espeak_root, 4, 3))
    assert same > different + 0.15, (same, different)  # measured 0.88 vs 0.53


def test_resemblyzer_tells_synthetic_voices_apart(judge, synthetic_root: Path) -> None:
    same, different = _same_and_different(judge, _first(synthetic_root, 4, 3))
    assert same > different + 0.05, (same, different)  # measured 0.82 vs 0.72: buzzier voices, less apart


def test_resemblyzer_judge_equals_resemblyzer_itself(synthetic_root: Path) -> None:
    from resemblyzer import VoiceEncoder, preprocess_wav

    path = _first(synthetic_root, 1, 1)[0].path
    wav = read_audio(path, 22050)  # another rate: preprocess_wav resamples it
    ours = resemblyzer_embedder(22050)(wav)
    reference = VoiceEncoder(device="cpu", verbose=False).embed_utterance(preprocess_wav(wav.numpy(), source_sr=22050))
    assert ours.shape == (256,) and torch.allclose(ours, torch.from_numpy(reference), atol=1e-5)
    assert float(ours.norm()) == pytest.approx(1.0, abs=1e-5)


def test_clips_without_voice(judge) -> None:
    unvoiced = judge(0.1 * torch.randn(SAMPLE_RATE // 50, generator=torch.Generator().manual_seed(0)))  # 20 ms
    assert torch.isfinite(unvoiced).all() and float(unvoiced.norm()) == pytest.approx(1.0, abs=1e-5)
    for silent in (torch.zeros(SAMPLE_RATE), torch.zeros(0), torch.full((SAMPLE_RATE,), float("nan"))):
        assert judge(silent).shape == (256,) and torch.isnan(judge(silent)).all()


def test_build_judge_selects_resemblyzer_a_checkpoint_or_nothing(tmp_path: Path, monkeypatch) -> None:
    assert FewShotConfig().speaker_encoder == "resemblyzer"
    for off in (None, "none", " None ", ""):
        assert build_judge(off, SAMPLE_RATE) is None and judge_record(off) is None
    assert callable(build_judge("resemblyzer", SAMPLE_RATE)) and judge_checkpoint("resemblyzer") is None
    assert judge_record("resemblyzer") == {"name": "resemblyzer", "version": importlib.metadata.version("resemblyzer")}
    checkpoint = tmp_path / "encoder.ckpt"
    checkpoint.write_bytes(b"weights")
    monkeypatch.setattr(judges, "speaker_embedder", lambda path, rate: ("checkpoint judge", Path(path), rate))
    assert build_judge(str(checkpoint), 22050) == ("checkpoint judge", checkpoint, 22050)
    assert judge_record(str(checkpoint))["sha256"] == judges.file_sha256(checkpoint)
    with pytest.raises(LightningTTSError, match="checkpoint not found: resemblizer") as err:
        build_judge("resemblizer", SAMPLE_RATE)
    assert "\n" not in str(err.value)


def test_missing_resemblyzer_is_one_line(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # import resemblyzer -> ImportError
    with pytest.raises(LightningTTSError, match="pip install resemblyzer") as err:
        build_judge("resemblyzer", SAMPLE_RATE)
    assert "\n" not in str(err.value)


@needs_espeak
def test_embed_with_the_resemblyzer_judge(espeak_root: Path, make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("data.corpus=vctk", f"data.root={espeak_root}", "data.splits.val=1", "data.splits.test=2")
    result = embed_split(cfg, "resemblyzer", tmp_path / "embed", split="test", per_speaker=3, method="pca",
                         progress=False)
    assert result.embeddings.vectors.shape == (6, 256) and result.n_speakers == 2
    assert result.eer is not None and result.eer <= 0.2 and (tmp_path / "embed" / "embeddings.npz").is_file()
