"""The Python face of the package: a trained checkpoint that adapts to, clones and speaks in voices.

Example::

    from lightning_tts import TTS
    tts = TTS.from_checkpoint("last.ckpt", device="auto", vocoder="griffin_lim")
    voice = tts.adapt("my_voice/", shots=5, steps=20)      # or tts.clone(["ref1.wav", "ref2.wav"])
    tts.save(voice, "my_voice.pt")
    tts.to_file("Hello there.", voice, "hello.wav")

The ``adapt`` and ``synthesize`` commands are thin calls of this class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from lightning_tts.adaptation import load_adapted, save_adapted
from lightning_tts.atomic import require_parent
from lightning_tts.audio import write_audio
from lightning_tts.data.support import load_references, load_support
from lightning_tts.devices import resolve_device
from lightning_tts.errors import ConfigError, LightningTTSError
from lightning_tts.learners import load_learner
from lightning_tts.learners.base import AdaptedState, BaseLearner
from lightning_tts.learners.capabilities import ReferenceCloning, SpeakerTable
from lightning_tts.models.vocoder import Vocoder, VocoderConfig, build_vocoder

AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass
class Voice:
    """A voice to speak in: what adaptation (or cloning, or a speaker table) produced.

    Attributes:
        state: the learner's adapted state (speaker vector, parameter overrides, extras).
        description: the voice in words (for messages).
        info: how it was made (support files, skipped files, steps, support losses), saved with it.
    """

    state: AdaptedState
    description: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Spoken:
    """What ``TTS.to_file`` wrote: the file, its duration in seconds, and the mel frames."""

    path: Path
    seconds: float
    frames: int


def check_adapt_options(steps: Optional[int], lr: Optional[float]) -> None:
    """Refuse negative adaptation steps and non-positive rates.

    Raises:
        ConfigError: naming the option.
    """
    if steps is not None and steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {steps}")
    if lr is not None and lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {lr}")


def check_audio_output(path: str | Path) -> Path:
    """``path`` if it can receive audio: a .wav or .flac whose directory exists.

    Raises:
        LightningTTSError: another suffix, or a missing directory.
    """
    out = Path(path)
    if out.suffix.lower() not in AUDIO_SUFFIXES:
        raise LightningTTSError(f"--out must end in .wav or .flac, got {out}")
    return require_parent(out)


class TTS:
    """A trained checkpoint on a device, with a vocoder.

    Args:
        learner: the loaded learner.
        checkpoint: the file it was loaded from (adapted voices are tied to it by hash).
        vocoder: which vocoder makes audio (built on first use).
        device: where the model runs; audio is returned on the CPU.
    """

    def __init__(self, learner: BaseLearner, checkpoint: str | Path, vocoder: VocoderConfig,
                 device: torch.device) -> None:
        self.learner = learner.to(device)
        self.checkpoint = Path(checkpoint)
        self.vocoder_config = vocoder
        self.device = device
        self._vocoder: Optional[Vocoder] = None

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | torch.device = "auto",
                        vocoder: str | VocoderConfig = "griffin_lim") -> "TTS":
        """Load a checkpoint written by ``fit`` onto ``device`` (``auto``: CUDA when present).

        Raises:
            LightningTTSError: an unusable checkpoint or device.
        """
        config = vocoder if isinstance(vocoder, VocoderConfig) else VocoderConfig(name=vocoder)
        resolved = resolve_device(device)
        return cls(load_learner(checkpoint), checkpoint, config, resolved)

    @property
    def sample_rate(self) -> int:
        """Of the audio this model makes."""
        return self.learner.feature_params.sample_rate

    @property
    def vocoder(self) -> Vocoder:
        """The vocoder (built once, on first use)."""
        if self._vocoder is None:
            self._vocoder = build_vocoder(self.vocoder_config, self.learner.feature_params)
        return self._vocoder

    # ---------------------------------------------------------------- voices
    def speaker(self, name: Optional[str] = None) -> Voice:
        """A training speaker's voice (the first one when ``name`` is None).

        Raises:
            LightningTTSError: a learner without a speaker table, or an unknown speaker.
        """
        learner = self.learner
        if not isinstance(learner, SpeakerTable):
            raise LightningTTSError(f"learner {learner.name} has no speaker table: adapt to the speaker first (--adapted)")
        name = name if name is not None else learner.speakers[0]
        return Voice(learner.speaker_state(name), f"speaker {name}")

    def adapt(self, support: Optional[str | Path] = None, shots: Optional[int] = None, steps: Optional[int] = None,
              lr: Optional[float] = None, manifest: Optional[str | Path] = None,
              progress: Optional[Callable[[float], None]] = None) -> Voice:
        """Adapt to the voice of a folder of audio + same-stem .txt transcripts (or a manifest).

        Args:
            support: the folder.
            shots: use the first K usable utterances (default: all).
            steps: adaptation steps (default: the learner's ``adapt_steps``).
            lr: adaptation learning rate (default: the learner's).
            manifest: a CSV/JSONL manifest (audio,text) instead of a folder.
            progress: called after each step with its loss.

        Raises:
            ConfigError / DataError: bad options or an unusable support set.
        """
        check_adapt_options(steps, lr)
        learner = self.learner
        support_set = load_support(learner.feature_params, learner.text, support, manifest, shots)
        steps = learner.adapt_steps if steps is None else steps
        batch = support_set.batch.to(self.device)
        before = learner.support_loss(batch, learner.adapt(batch, steps=0))
        state = learner.adapt(batch, steps=steps, lr=lr, progress=progress)
        info = {"support": support_set.paths, "skipped": support_set.skipped, "steps": steps, "lr": lr,
                "support_loss_before": before, "support_loss_after": learner.support_loss(batch, state)}
        return Voice(state, f"voice adapted to {len(support_set.paths)} utterances", info)

    def clone(self, references: Sequence[str | Path]) -> Voice:
        """A voice from reference recordings alone: no transcripts, no gradient steps.

        Raises:
            DataError: an unusable reference file.
            LightningTTSError: a learner that cannot clone from audio alone.
        """
        mels, lengths = load_references(references, self.learner.feature_params)
        if not isinstance(self.learner, ReferenceCloning):
            raise LightningTTSError(f"learner {self.learner.name} cannot clone a voice from reference audio alone: "
                                    f"use 'adapt' with transcripts, then 'synthesize --adapted'")
        state = self.learner.reference_state(mels.to(self.device), lengths.to(self.device))
        return Voice(state, f"zero-shot voice of {len(references)} reference file(s)")

    def save(self, voice: Voice, path: str | Path) -> Path:
        """Write ``voice`` (only what adaptation changed, tied to this checkpoint) atomically."""
        save_adapted(path, voice.state, self.learner, self.checkpoint, voice.info)
        return Path(path)

    def load(self, path: str | Path) -> Voice:
        """A voice written by ``save`` (or the ``adapt`` command) from this checkpoint.

        Raises:
            LightningTTSError: an unreadable file, or one adapted from another checkpoint or learner.
        """
        return Voice(load_adapted(path, self.learner, self.checkpoint), f"adapted voice {path}")

    # ---------------------------------------------------------------- speech
    def synthesize(self, text: str, voice: Voice, pace: float = 1.0) -> torch.Tensor:
        """``text`` in ``voice`` -> (samples,) waveform at ``sample_rate``, on the CPU.

        Raises:
            ConfigError: a pace <= 0.
            TextError: empty or unpronounceable text.
        """
        return self.vocoder(self._mel(text, voice, pace))

    def to_file(self, text: str, voice: Voice, path: str | Path, pace: float = 1.0) -> Spoken:
        """Say ``text`` in ``voice`` into a .wav or .flac file (an existing file is replaced only once
        the new one is complete).

        Raises:
            LightningTTSError: a bad output path, pace or text.
        """
        out = check_audio_output(path)
        mel = self._mel(text, voice, pace)
        wav = self.vocoder(mel)
        write_audio(out, wav, self.sample_rate)
        return Spoken(out, wav.numel() / self.sample_rate, mel.shape[0])

    def _mel(self, text: str, voice: Voice, pace: float) -> torch.Tensor:
        """(T, n_mels) log-mel of ``text`` in ``voice``, on the CPU."""
        if pace <= 0:
            raise ConfigError(f"--pace must be > 0, got {pace}")
        tokens = torch.tensor(self.learner.text.encode(text), dtype=torch.long)
        return self.learner.synthesize(tokens, voice.state, pace=pace).cpu()
