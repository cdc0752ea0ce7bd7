"""The Python face: ``TTS`` loads a checkpoint, adapts, clones, saves, loads and speaks; devices."""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

import lightning_tts
from conftest import execute_notebook
from lightning_tts import TTS
from lightning_tts.errors import ConfigError, LightningTTSError

FIXTURES = Path(__file__).parent / "fixtures" / "old_checkpoints"


@pytest.fixture
def support(tmp_path: Path, synthetic_root: Path) -> Path:
    """Three utterances of one corpus speaker with their transcripts, as a user's folder."""
    folder = tmp_path / "my_voice"
    folder.mkdir()
    for wav in sorted(synthetic_root.rglob("p101_00[1-3]_mic1.flac")):
        (folder / wav.name).write_bytes(wav.read_bytes())
        text = synthetic_root / "txt" / "p101" / wav.name.replace("_mic1.flac", ".txt")
        (folder / wav.name.replace(".flac", ".txt")).write_text(text.read_text())
    return folder


def test_adapt_save_load_speak_round_trip(support: Path, tmp_path: Path) -> None:
    checkpoint = FIXTURES / "multispeaker_format1.ckpt"
    tts = TTS.from_checkpoint(checkpoint, device="cpu")
    voice = tts.adapt(support, shots=2, steps=3)
    assert voice.info["steps"] == 3 and len(voice.info["support"]) == 2
    assert voice.info["support_loss_after"] < voice.info["support_loss_before"]
    path = tts.save(voice, tmp_path / "my_voice.pt")
    again = TTS.from_checkpoint(checkpoint, device="cpu").load(path)
    torch.testing.assert_close(again.state.speaker, voice.state.speaker)
    assert again.state.params.keys() == voice.state.params.keys()
    spoken = tts.to_file("Hello there.", again, tmp_path / "hello.wav")
    audio, rate = sf.read(spoken.path)
    assert rate == tts.sample_rate and len(audio) > 0 and spoken.frames > 0
    wav = tts.synthesize("Hello there.", again)
    assert wav.device.type == "cpu" and abs(wav.numel() - len(audio)) <= 1


def test_clone_needs_a_learner_that_clones(support: Path) -> None:
    references = sorted(support.glob("*.flac"))
    with pytest.raises(LightningTTSError, match="cannot clone a voice from reference audio alone"):
        TTS.from_checkpoint(FIXTURES / "multispeaker_format1.ckpt", device="cpu").clone(references)
    voice = TTS.from_checkpoint(FIXTURES / "mann_format1.ckpt", device="cpu").clone(references)
    assert "memory" in voice.state.extras


def test_devices_auto_and_cpu_and_refusals() -> None:
    auto = TTS.from_checkpoint(FIXTURES / "maml_format1.ckpt", device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.device.type == expected and next(auto.learner.parameters()).device.type == expected
    with pytest.raises(ConfigError, match="--device must be auto, cpu, cuda or cuda:N"):
        TTS.from_checkpoint(FIXTURES / "maml_format1.ckpt", device="toaster")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            TTS.from_checkpoint(FIXTURES / "maml_format1.ckpt", device="cuda")
    else:  # an index past the devices present
        with pytest.raises(ConfigError, match=r"CUDA device\(s\), cuda:0 to"):
            TTS.from_checkpoint(FIXTURES / "maml_format1.ckpt", device=f"cuda:{torch.cuda.device_count()}")


def test_the_package_import_stays_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, lightning_tts; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
    assert lightning_tts.TTS is TTS


def test_quickstart_notebook_adapts_and_plays_recording_beside_clone(tmp_path: Path, synthetic_root: Path) -> None:
    checkpoint = FIXTURES / "maml_format1.ckpt"
    out, voice_dir = tmp_path / "quickstart", tmp_path / "voice"  # no voice folder: the notebook fills it
    outputs = execute_notebook("quickstart.ipynb", {
        "LIGHTNING_TTS_CHECKPOINT": str(checkpoint), "LIGHTNING_TTS_VOICE_DIR": str(voice_dir),
        "LIGHTNING_TTS_CORPUS": str(synthetic_root), "LIGHTNING_TTS_OUT": str(out), "LIGHTNING_TTS_DEVICE": "cpu",
        "LIGHTNING_TTS_SHOTS": "2", "LIGHTNING_TTS_STEPS": "2"})
    text = "".join(o.get("text", "") for o in outputs)
    trained_on = torch.load(checkpoint, weights_only=True)["hyper_parameters"]["speakers"]
    (speaker,) = {p.name.split("_")[0] for p in voice_dir.glob("*.flac")}
    assert speaker not in trained_on and len(list(voice_dir.glob("*.txt"))) == 3
    assert "(held out)" in text and "after 2 steps" in text
    side_by_side = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any(html.count("<audio") == 2 and "recording" in html and "clone" in html for html in side_by_side)
    assert (out / "voice.pt").is_file() and sf.info(str(out / "clone.wav")).frames > 0
