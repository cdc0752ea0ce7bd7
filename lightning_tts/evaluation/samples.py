"""Listening samples of an evaluation: the audio of the first queries of every speaker, kept as files.

``SampleWriter`` is the grid's sample hook (``Evaluator(keep=...)``): for the first ``per_speaker``
queries of each speaker it writes, under ``<out>/samples/<speaker>/``,

- ``recording_<query>.wav`` (ground truth) and ``ceiling_<query>.wav`` (vocoder ceiling),
- ``<system>_K<shots>_S<steps>_<query>.wav`` per checkpoint and grid cell,

each with a mel thumbnail (same name, ``.png``), and records them in ``entries`` (paths relative to
``out``, so the folder can be moved as a whole). Every name component is a filesystem-safe slug.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from lightning_tts.audio import FeatureExtractor, FeatureParams, write_audio
from lightning_tts.data.corpora import Utterance
from lightning_tts.evaluation.speaker_sets import SpeakerSet
from lightning_tts.plots import mel_image_figure, save_figure

SAMPLES_DIR = "samples"
#: File-name prefixes of the two reference rows (``Evaluator.reference_rows``' system names).
REFERENCE_PREFIXES = {"ground truth": "recording", "vocoder ceiling": "ceiling"}


def slug(text: str) -> str:
    """A filesystem-safe name: runs of anything but letters, digits, '.', '_' and '-' become one '-'
    ('maml (version_0)' -> 'maml-version_0'); never empty, never starting with '.' or '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


class SampleWriter:
    """Writes the kept queries' audio and mel thumbnails; one instance per evaluation.

    Args:
        out: the evaluation's output folder (``samples/`` is created in it).
        sets: the evaluation's speaker sets; the first ``per_speaker`` queries of each are kept.
        per_speaker: queries kept per speaker (0 keeps nothing).
        features: the evaluation's features (sample rate of the files, mel of the thumbnails).
    """

    def __init__(self, out: Path, sets: Sequence[SpeakerSet], per_speaker: int, features: FeatureParams) -> None:
        self.out, self.features = out, features
        self.kept = {(s.speaker, u.utterance_id) for s in sets for u in s.query[:per_speaker]}
        self.extractor = FeatureExtractor(features)
        self.entries: list[dict[str, Any]] = []
        self._slugs: dict[str, str] = dict(REFERENCE_PREFIXES)

    def __call__(self, speaker: str, utt: Utterance, system: str, shots: Optional[int], steps: Optional[int],
                 wav: torch.Tensor) -> None:
        """Keep ``wav`` ((T,) audio of ``system`` at (shots, steps) for query ``utt`` of ``speaker``)
        if ``utt`` is one of the speaker's kept queries."""
        if (speaker, utt.utterance_id) not in self.kept:
            return
        cell = "" if shots is None else f"_K{shots}_S{steps}"
        rel = Path(SAMPLES_DIR, slug(speaker), f"{self._system_slug(system)}{cell}_{slug(utt.utterance_id)}.wav")
        (self.out / rel.parent).mkdir(parents=True, exist_ok=True)
        write_audio(self.out / rel, wav, self.features.sample_rate)
        save_figure(mel_image_figure(self.mel(wav)), self.out / rel.with_suffix(".png"))
        self.entries.append({"speaker": speaker, "query": utt.utterance_id, "text": utt.text, "system": system,
                             "shots": shots, "steps": steps, "audio": rel.as_posix(),
                             "mel": rel.with_suffix(".png").as_posix()})

    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(frames, n_mels) log-mel of a (T,) clip; a clip shorter than the FFT window (an untrained model's)
        is zero-padded to it first."""
        wav = wav.detach().cpu().float().reshape(-1)  # (T,)
        wav = torch.nn.functional.pad(wav, (0, max(0, self.features.n_fft - wav.numel())))  # (max(T, n_fft),)
        return self.extractor(wav)["mel"]

    def _system_slug(self, system: str) -> str:
        """The file-name prefix of a system, unique among this evaluation's systems."""
        if system not in self._slugs:
            base, taken = slug(system), set(self._slugs.values())
            self._slugs[system] = next(s for s in (base, *(f"{base}-{i}" for i in range(2, len(taken) + 3)))
                                       if s not in taken)
        return self._slugs[system]
