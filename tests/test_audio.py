"""Audio I/O, resampling and features."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lightning_tts.audio import FeatureExtractor, FeatureParams, audio_info, read_audio, write_audio
from lightning_tts.errors import AudioError


def test_read_resamples_and_downmixes(tmp_path: Path) -> None:
    t = np.arange(48000) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "a.flac", stereo, 48000)
    wav = read_audio(tmp_path / "a.flac", 16000)
    assert wav.shape == (16000,) and wav.dtype == torch.float32
    spectrum = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s of audio: bin k is k Hz


def test_write_roundtrip_is_16bit_and_atomic(tmp_path: Path) -> None:
    write_audio(tmp_path / "x.wav", torch.linspace(-0.5, 0.5, 1600), 16000)
    assert sf.info(str(tmp_path / "x.wav")).subtype == "PCM_16"
    assert audio_info(tmp_path / "x.wav") == (1600, 16000)
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(Exception, match="does not exist"):
        write_audio(tmp_path / "missing" / "x.wav", torch.zeros(10), 16000)


def test_corrupt_and_empty_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + b"\x00" * 50)
    with pytest.raises(AudioError, match="bad.flac"):
        read_audio(bad, 16000)
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(AudioError):
        audio_info(tmp_path / "zero.wav")


def test_features_shapes_pitch_and_key() -> None:
    params = FeatureParams(pitch=True, energy=True)
    t = torch.arange(16000) / 16000
    feats = FeatureExtractor(params)(0.5 * torch.sin(2 * torch.pi * 150 * t))
    frames = params.n_frames(16000)
    assert feats["mel"].shape == (frames, 80) and feats["pitch"].shape == (frames,)
    assert abs(float(feats["pitch"][5:-5].median()) - 150) < 3
    silent = FeatureExtractor(params)(torch.zeros(16000) + 1e-4 * torch.randn(16000))
    assert float((silent["pitch"] > 0).float().mean()) < 0.2
    assert FeatureParams(n_mels=40).key() != params.key() != FeatureParams().key()


@pytest.mark.parametrize("samples", [0, 1, 100, 512, 513, 2000])
def test_features_of_clips_too_short_to_reflect(samples: int) -> None:
    """A near-empty waveform (an untrained model's synthesis) has features, not an error: zero-padded
    frames where reflection needs more than half an FFT window; longer clips keep reflection."""
    params = FeatureParams(n_fft=1024, pitch=True, energy=True)
    wav = 0.3 * torch.sin(2 * torch.pi * 150 * torch.arange(samples) / 16000)
    feats = FeatureExtractor(params)(wav)
    frames = params.n_frames(samples)
    assert feats["mel"].shape == (frames, 80) and feats["pitch"].shape == feats["energy"].shape == (frames,)
    assert all(torch.isfinite(v).all() for v in feats.values())
    if samples > params.n_fft // 2:  # reflection, as before: the extractor's own (reflecting) spectrogram
        extractor = FeatureExtractor(params)
        mel = torch.log(torch.clamp(extractor.mel_scale(extractor.spectrogram(wav)), min=1e-5)).T
        assert torch.equal(feats["mel"], mel)
