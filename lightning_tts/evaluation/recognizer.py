"""An offline speech recogniser for word error rates: CMU PocketSphinx with the US-English acoustic
model, language model and dictionary that ship inside the ``pocketsphinx`` wheel (nothing is
downloaded). It is a weak recogniser (a 2010s HMM system): read a synthesis's WER against the WER of
the recordings it imitates, which ``evaluate`` reports as the ground-truth row.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch

from lightning_tts.audio import resample
from lightning_tts.errors import LightningTTSError

RECOGNIZER = "pocketsphinx en-us (acoustic model, en-us.lm.bin, cmudict-en-us.dict from the wheel)"
RECOGNIZER_SAMPLE_RATE = 16000  # the rate of PocketSphinx's en-us acoustic model
Transcriber = Callable[[torch.Tensor], str]  # waveform (N,) -> transcript


@lru_cache(maxsize=1)
def _decoder() -> Any:
    """One PocketSphinx decoder per process (loading its models takes a fraction of a second).

    Raises:
        LightningTTSError: pocketsphinx is not installed.
    """
    try:
        from pocketsphinx import Decoder
    except ImportError as err:
        raise LightningTTSError("word error rates need the pocketsphinx recogniser: pip install pocketsphinx") from err
    return Decoder(samprate=RECOGNIZER_SAMPLE_RATE, loglevel="FATAL")


def transcribe(wav: torch.Tensor, sample_rate: int) -> str:
    """The recogniser's transcript of a waveform (lower case; may be empty), the same whatever was
    transcribed before it in this process.

    Args:
        wav: (N,) waveform in [-1, 1] at ``sample_rate``.
        sample_rate: its rate; resampled to 16 kHz.
    """
    audio = resample(wav.detach().float().cpu().reshape(-1), sample_rate, RECOGNIZER_SAMPLE_RATE)
    pcm = (np.clip(audio.numpy(), -1.0, 1.0) * 32767).astype(np.int16)  # (N16,)
    decoder = _decoder()
    decoder.reinit_feat()  # fresh feature state (its cepstral mean adapts to each clip): a clip's transcript
    decoder.start_utt()    # is a function of that clip alone, not of the clips decoded before it
    decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr.lower() if hypothesis is not None else ""


def transcriber(sample_rate: int) -> Transcriber:
    """``transcribe`` bound to a sample rate; loads the recogniser now, so a missing package fails
    before any work."""
    _decoder()
    return lambda wav: transcribe(wav, sample_rate)
