"""Text -> audio file with a checkpoint and a voice (the ``synthesize`` command)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from lightning_tts.adaptation import load_adapted
from lightning_tts.atomic import require_parent
from lightning_tts.audio import write_audio
from lightning_tts.data.support import load_references
from lightning_tts.errors import ConfigError, LightningTTSError
from lightning_tts.learners import load_learner
from lightning_tts.learners.base import AdaptedState, BaseLearner
from lightning_tts.learners.capabilities import ReferenceCloning, SpeakerTable
from lightning_tts.models.vocoder import VocoderConfig, build_vocoder


@dataclass
class Synthesis:
    """What ``synthesize_to_file`` wrote.

    Attributes:
        path: the audio file.
        seconds: its duration.
        frames: mel frames synthesised.
        voice: which voice spoke, in words.
    """

    path: Path
    seconds: float
    frames: int
    voice: str


def choose_voice(learner: BaseLearner, checkpoint: str | Path, speaker: Optional[str] = None,
                 adapted: Optional[str | Path] = None,
                 references: Optional[Sequence[str | Path]] = None) -> tuple[AdaptedState, str]:
    """(voice, its description): an adapted-voice file, a zero-shot clone of reference recordings, or
    a training speaker (the first one when none is named).

    Raises:
        LightningTTSError: the learner cannot give the asked voice, or the inputs are unusable.
    """
    if adapted is not None:
        return load_adapted(adapted, learner, checkpoint), f"adapted voice {adapted}"
    if references is not None:
        mels, lengths = load_references(references, learner.feature_params)
        if not isinstance(learner, ReferenceCloning):
            raise LightningTTSError(f"learner {learner.name} cannot clone a voice from reference audio alone: "
                                    f"use 'adapt' with transcripts, then 'synthesize --adapted'")
        return learner.reference_state(mels, lengths), f"zero-shot voice of {len(references)} reference file(s)"
    if not isinstance(learner, SpeakerTable):
        raise LightningTTSError(f"learner {learner.name} has no speaker table: adapt to the speaker first (--adapted)")
    speaker = speaker if speaker is not None else learner.speakers[0]
    return learner.speaker_state(speaker), f"speaker {speaker}"


def synthesize_to_file(checkpoint: str | Path, text: str, out: str | Path, speaker: Optional[str] = None,
                       adapted: Optional[str | Path] = None, references: Optional[Sequence[str | Path]] = None,
                       pace: float = 1.0, vocoder: Optional[VocoderConfig] = None) -> Synthesis:
    """Say ``text`` in a voice of ``checkpoint`` (see ``choose_voice``) and write it to ``out``
    (.wav or .flac, at the model's sample rate; an existing file is replaced only once the new one
    is complete).

    Raises:
        ConfigError: a pace <= 0.
        LightningTTSError: a bad output path, text, checkpoint or voice.
    """
    if pace <= 0:
        raise ConfigError(f"--pace must be > 0, got {pace}")
    out = Path(out)
    if out.suffix.lower() not in (".wav", ".flac"):
        raise LightningTTSError(f"--out must end in .wav or .flac, got {out}")
    require_parent(out)
    learner = load_learner(checkpoint)
    tokens = torch.tensor(learner.text.encode(text), dtype=torch.long)
    state, voice = choose_voice(learner, checkpoint, speaker, adapted, references)
    mel = learner.synthesize(tokens, state, pace=pace)
    wav = build_vocoder(vocoder or VocoderConfig(), learner.feature_params)(mel)
    write_audio(out, wav, learner.feature_params.sample_rate)
    return Synthesis(out, wav.numel() / learner.feature_params.sample_rate, mel.shape[0], voice)
