"""A multi-speaker corpus that speaks English, rendered by eSpeak NG (the optional ``espeak`` extra).

``data.corpus=espeak`` (or ``python -m lightning_tts synthetic-corpus --engine espeak``) writes a
VCTK-0.92-layout corpus whose speakers are eSpeak NG voices: an English accent (US, New York, RP,
British, Scottish, Lancaster, West Midlands, Caribbean) x a voice variant (formant sets of male and
female voices, including the Klatt-synthesiser ones) x pitch x pitch range x speaking rate. The texts
are meaningful English sentences from the project's own grammar (``data/sentences.py``): the first
``shared`` sentences are the same for every speaker, as VCTK's elicitation paragraph is, the rest are
each speaker's own. ``speaker-info.txt`` records accent, variant, gender and prosody settings;
``espeak-voices.json`` the full voice table. Everything is a function of the seed. libespeak-ng keeps
state from one utterance to the next (its output drifts by a few samples), so each speaker is rendered
from start to end in a fresh process (spawned, torch-free): the corpus does not depend on the worker
count, nor on where an interrupted build stopped.

eSpeak NG is GPL-3.0. It is never imported by the package: the ``espeakng-loader`` wheel (which ships
``libespeak-ng`` and its voice data) is loaded through ``ctypes`` at run time, only when this corpus is
built, and is installed only with ``pip install "lightning_tts[espeak]"``.

Example::

    python -m lightning_tts synthetic-corpus --engine espeak --out artifacts/espeak --speakers 40 --utterances 30
"""
from __future__ import annotations

import ctypes
import json
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import soundfile as sf
from tqdm import tqdm

from lightning_tts.atomic import atomic_path, write_json, write_text
from lightning_tts.data.sentences import make_sentence
from lightning_tts.errors import DataError

ESPEAK_SAMPLE_RATE = 22050  # what libespeak-ng renders; the corpus is written at this rate
# eSpeak NG's English accents (language names of its voice files); US accents first and most often,
# since the word-error-rate recogniser is US English.
ACCENTS = ("en-us", "en-gb-x-rp", "en-us", "en", "en-us-nyc", "en-gb-scotland", "en-us", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-029")
# Voice variants (files under espeak-ng-data/voices/!v) that sound like a person, with their gender:
# the robotic, whispering and croaking variants are left out, and so are those the PocketSphinx
# recogniser understood least (word error rate above 0.9 on plain sentences, US accent).
VARIANTS = {
    "F": ("f1", "f2", "f3", "f4", "f5", "anika", "steph", "steph2", "steph3"),
    "M": ("m1", "m2", "m3", "m4", "m5", "m6", "m8", "klatt", "klatt2", "klatt3", "klatt4", "Denis", "adam",
          "benjamin", "caleb", "david", "edward", "john", "paul", "robert", "victor"),
}
# espeak_PARAMETER values and flags of speak_lib.h
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class EspeakVoice:
    """One speaker: an eSpeak NG voice and its prosody settings.

    Attributes:
        speaker: speaker id (``e001``...).
        gender: ``F`` or ``M`` (of the variant).
        accent: eSpeak NG language name (``en-us``...).
        variant: voice variant name (``f3``, ``klatt2``...).
        pitch: base pitch, 0-99 (eSpeak's default 50).
        pitch_range: pitch range, 0-99 (default 50; 0 is a monotone).
        rate: speaking rate in words per minute (default 175).
    """

    speaker: str
    gender: str
    accent: str
    variant: str
    pitch: int
    pitch_range: int
    rate: int

    @property
    def name(self) -> str:
        """The name ``espeak_SetVoiceByName`` takes (``en-us+f3``)."""
        return f"{self.accent}+{self.variant}"

    @classmethod
    def draw(cls, index: int, seed: int) -> "EspeakVoice":
        """Speaker ``index`` of a corpus: genders alternate, accents and variants cycle through a
        seeded shuffle (so neighbouring speakers differ), prosody is drawn per speaker."""
        gender = "F" if index % 2 else "M"
        variants = VARIANTS[gender]
        order = np.random.default_rng([seed, 0]).permutation(len(variants))
        accents = np.random.default_rng([seed, 1]).permutation(len(ACCENTS))
        rng = np.random.default_rng([seed, 2, index])
        low, high = (45, 90) if gender == "F" else (15, 65)
        return cls(speaker=f"e{index + 1:03d}", gender=gender, accent=ACCENTS[accents[index % len(ACCENTS)]],
                   variant=variants[order[(index // 2) % len(variants)]], pitch=int(rng.integers(low, high)),
                   pitch_range=int(rng.integers(20, 90)), rate=int(rng.integers(140, 200)))


class EspeakEngine:
    """libespeak-ng through ``ctypes`` (one per process: the library is a process-wide singleton).

    Raises:
        DataError: the ``espeakng-loader`` package is not installed, or the library fails to start.
    """

    _instance: Optional["EspeakEngine"] = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:
            raise DataError('the espeak corpus needs eSpeak NG: pip install "lightning_tts[espeak]" '
                            "(installs espeakng-loader, GPL-3.0)") from err
        lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate != ESPEAK_SAMPLE_RATE:
            raise DataError(f"libespeak-ng failed to start or renders at {rate} Hz, not {ESPEAK_SAMPLE_RATE}")
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept alive as long as the engine
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    @classmethod
    def get(cls) -> "EspeakEngine":
        """This process's engine (started at the first call)."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, wav: Any, n: int, events: Any) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # continue synthesis

    def render(self, text: str, voice: EspeakVoice, seed: int = 0) -> np.ndarray:
        """Speak ``text`` in ``voice``; ``seed`` seeds the engine's noise (breath, aspiration), which
        it otherwise seeds from the clock.

        Returns:
            (T,) float32 waveform at ``ESPEAK_SAMPLE_RATE``.

        Raises:
            DataError: eSpeak NG does not know the voice.
        """
        if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise DataError(f"eSpeak NG has no voice {voice.name!r} (speaker {voice.speaker})")
        for parameter, value in ((_RATE, voice.rate), (_PITCH, voice.pitch), (_RANGE, voice.pitch_range),
                                 (_VOLUME, 100)):
            self._lib.espeak_SetParameter(parameter, value, 0)
        self._lib.espeak_ng_SetRandSeed(seed)
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        self._lib.espeak_Synth(data, len(data), 0, 0, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)  # (T,) int16
        return samples.astype(np.float32) / 32768.0


@dataclass
class EspeakConfig:
    """The eSpeak NG corpus built at ``data.root`` when ``data.corpus=espeak`` and it is missing
    (``data.espeak``).

    Attributes:
        speakers: number of speakers (alternating M/F).
        utterances: utterances per speaker.
        shared: how many of them (the first) every speaker says with the same text.
        seed: the whole corpus is a function of this seed.
    """

    speakers: int = 40
    utterances: int = 30
    shared: int = 5
    seed: int = 0


def utterance_text(index: int, u: int, shared: int, seed: int) -> str:
    """Text of utterance ``u`` of speaker ``index``: a shared sentence for ``u < shared``."""
    rng = np.random.default_rng([seed, 3, u] if u < shared else [seed, 4, index, u])
    return make_sentence(rng)


def _write_flac(path: Path, wav: np.ndarray) -> None:
    """16-bit FLAC at ``ESPEAK_SAMPLE_RATE``, atomically (``audio.write_audio``'s format, without
    importing torch into the spawned renderers)."""
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(wav, -1.0, 1.0), ESPEAK_SAMPLE_RATE, subtype="PCM_16", format="FLAC")


def _render_speaker(job: tuple[str, int, EspeakConfig]) -> int:
    """Render every utterance of one speaker in order (the engine's state depends on what it said
    before) and write the missing ones; returns how many were written."""
    out, index, cfg = job
    voice = EspeakVoice.draw(index, cfg.seed)
    root = Path(out)
    wav_dir, txt_dir = root / "wav48_silence_trimmed" / voice.speaker, root / "txt" / voice.speaker
    wav_dir.mkdir(parents=True, exist_ok=True)
    txt_dir.mkdir(parents=True, exist_ok=True)
    if EspeakEngine._instance is not None:
        raise RuntimeError("an espeak speaker must be rendered in a fresh process")  # see the module docstring
    engine, written = EspeakEngine.get(), 0
    for u in range(cfg.utterances):
        utt_id = f"{voice.speaker}_{u + 1:03d}"
        wav_path = wav_dir / f"{utt_id}_mic1.flac"
        text = utterance_text(index, u, cfg.shared, cfg.seed)
        wav = engine.render(text, voice, seed=cfg.seed * 1_000_003 + index * 1009 + u)  # (T,)
        if wav_path.exists():
            continue
        write_text(txt_dir / f"{utt_id}.txt", text + "\n")
        _write_flac(wav_path, wav)  # last: marks the utterance complete
        written += 1
    return written


def corpus_settings(cfg: EspeakConfig) -> dict[str, Any]:
    """What identifies a built corpus (stored in ``espeak-voices.json``)."""
    return {"seed": cfg.seed, "shared": cfg.shared, "sample_rate": ESPEAK_SAMPLE_RATE}


def build_espeak_corpus(out: str | Path, config: EspeakConfig = EspeakConfig(), workers: int = 2,
                        progress: bool = True) -> Path:
    """Write (or complete) an eSpeak NG corpus in VCTK-0.92 layout.

    Args:
        out: corpus root; created if missing. An interrupted build is completed, not restarted.
        config: speakers, utterances, shared sentences and seed.
        workers: rendering processes.
        progress: show a progress bar.

    Returns:
        The corpus root.

    Raises:
        DataError: eSpeak NG is not installed, or ``out`` holds a corpus of other settings.
    """
    root = Path(out)
    table = root / "espeak-voices.json"
    if table.is_file():
        old = json.loads(table.read_text())
        if old["settings"] != corpus_settings(config):
            raise DataError(f"{root} already holds an espeak corpus with settings {old['settings']}; "
                            f"choose another --out")
    EspeakEngine.get()  # a missing extra fails here, in one line, before any file is written
    root.mkdir(parents=True, exist_ok=True)
    voices = [EspeakVoice.draw(i, config.seed) for i in range(config.speakers)]
    jobs = [(str(root), i, config) for i in range(config.speakers)]
    bar = tqdm(total=config.speakers, desc="espeak corpus", unit="spk", disable=not progress)
    # one fresh process per speaker (Pool's maxtasksperchild replaces a worker after every task,
    # ProcessPoolExecutor's max_tasks_per_child did not always): no engine state crosses speakers
    with multiprocessing.get_context("spawn").Pool(max(1, workers), maxtasksperchild=1) as pool:
        for _ in pool.imap(_render_speaker, jobs, chunksize=1):
            bar.update()
    bar.close()
    lines = ["ID  AGE  GENDER  ACCENTS  REGION  COMMENTS"]
    lines += [f"{v.speaker}  30  {v.gender}    {v.accent}  espeak-ng  variant={v.variant} pitch={v.pitch} "
              f"range={v.pitch_range} rate={v.rate}" for v in voices]
    write_text(root / "speaker-info.txt", "\n".join(lines) + "\n")
    write_json(table, {"settings": corpus_settings(config), "utterances": config.utterances,
                       "speakers": [asdict(v) for v in voices]})  # last: marks the corpus complete
    return root


def read_voices(root: str | Path) -> list[EspeakVoice]:
    """The voice table stored with an espeak corpus."""
    return [EspeakVoice(**row) for row in json.loads((Path(root) / "espeak-voices.json").read_text())["speakers"]]
