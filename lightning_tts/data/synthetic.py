"""A procedural multi-speaker speech corpus: the embedded default, written in the VCTK-0.92 layout.

Each utterance is made by a source-filter synthesiser (numpy + scipy):

- text -> CMUdict phones -> per-phone targets (formants F1-F3, voicing, frication band, duration);
- source: a Rosenberg glottal pulse train at a declining, stress-bumped F0 contour, plus aspiration
  noise (breathiness); frication noise for fricatives, a closure and a noise burst for stops;
- filter: a cascade of four time-varying second-order resonators (Klatt 1980) driven frame by frame
  (5 ms), the frication noise through its own resonator.

A speaker is a set of true generator parameters: F0 mean and range, vocal-tract scaling (all formants
multiplied), speaking rate, breathiness, glottal open quotient and loudness. They are written to
``speaker-params.json`` so tests can check that learned speaker spaces recover them. Everything is
deterministic from the seed: utterance (s, u) uses its own RNG, so the worker count does not matter.

Example::

    python -m lightning_tts synthetic-corpus --out artifacts/synthetic --speakers 40 --utterances 30 --seed 0
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy.signal import lfilter
from tqdm import tqdm

from lightning_tts.atomic import write_json, write_text
from lightning_tts.audio import write_audio
from lightning_tts.errors import DataError
from lightning_tts.text import _cmudict

# Short, common words with CMUdict pronunciations; sentences are drawn from them.
WORDS = """the a of and to in is was he for it with as his on be at by had not are but from or have an
they which one you were her all she there would their we him been has when who will more no if out so
said what up its about into than them can only other new some could time these two may then do first
any my now such like our over man me even most made after also did many before must through back
years where much your way well down should because each just those people how too little state good
very make world still own see men work long get here between both life being under never day same
another know while last might us great old year off come since against go came right used take three
small house water voice river green morning light garden music paper letter summer winter open quiet
simple window yellow story family city table mother father sister brother children evening friend""".split()

PHONE_FRAME_S = 0.005
_VOWELS = {  # F1, F2, F3 (Hz) for a reference adult male; diphthongs have two targets
    "AA": [(730, 1090, 2440)], "AE": [(660, 1720, 2410)], "AH": [(520, 1190, 2390)], "AO": [(570, 840, 2410)],
    "EH": [(530, 1840, 2480)], "ER": [(490, 1350, 1690)], "IH": [(390, 1990, 2550)], "IY": [(270, 2290, 3010)],
    "UH": [(440, 1020, 2240)], "UW": [(300, 870, 2240)], "AW": [(730, 1090, 2440), (300, 870, 2240)],
    "AY": [(730, 1090, 2440), (270, 2290, 3010)], "EY": [(530, 1840, 2480), (270, 2290, 3010)],
    "OW": [(570, 840, 2410), (300, 870, 2240)], "OY": [(570, 840, 2410), (270, 2290, 3010)],
}
_SONORANTS = {  # formant loci and relative amplitude
    "L": ((360, 1300, 2800), 0.6), "R": ((420, 1300, 1600), 0.6), "W": ((300, 700, 2200), 0.6),
    "Y": ((280, 2200, 2900), 0.6), "M": ((280, 900, 2200), 0.35), "N": ((280, 1500, 2500), 0.35),
    "NG": ((280, 2000, 2700), 0.35),
}
_FRICATIVES = {  # frication centre (Hz), bandwidth (Hz), amplitude, voiced
    "S": (5500, 1800, 0.5, False), "Z": (5500, 1800, 0.35, True), "SH": (3000, 1400, 0.5, False),
    "ZH": (3000, 1400, 0.35, True), "F": (6000, 3500, 0.2, False), "V": (6000, 3500, 0.15, True),
    "TH": (6500, 3500, 0.15, False), "DH": (6500, 3500, 0.12, True), "HH": (1500, 3000, 0.0, False),
}
_STOPS = {  # burst centre (Hz), voiced
    "P": (800, False), "B": (800, True), "T": (4000, False), "D": (4000, True), "K": (2200, False),
    "G": (2200, True), "CH": (3000, False), "JH": (3000, True),
}
_NEUTRAL = (500, 1500, 2500)


@dataclass(frozen=True)
class SpeakerParams:
    """The true generator parameters of one synthetic speaker."""

    speaker: str
    gender: str
    f0_mean: float  # Hz
    f0_range: float  # semitones of declination + stress movement
    vtl_scale: float  # formant multiplier (shorter vocal tract -> higher formants)
    rate: float  # speaking-rate multiplier (phone durations divided by it)
    breathiness: float  # aspiration noise relative to voicing
    open_quotient: float  # glottal open phase fraction
    loudness: float  # peak amplitude

    @classmethod
    def draw(cls, index: int, seed: int) -> "SpeakerParams":
        """Speaker ``index`` of the corpus with this seed."""
        rng = np.random.default_rng([seed, index, 7])
        gender = "F" if index % 2 else "M"
        female = gender == "F"
        return cls(
            speaker=f"p{index + 101:03d}",
            gender=gender,
            f0_mean=float(rng.uniform(165, 255) if female else rng.uniform(85, 150)),
            f0_range=float(rng.uniform(2.0, 7.0)),
            vtl_scale=float(rng.uniform(1.06, 1.24) if female else rng.uniform(0.86, 1.02)),
            rate=float(rng.uniform(0.8, 1.25)),
            breathiness=float(rng.uniform(0.0, 0.35)),
            open_quotient=float(rng.uniform(0.4, 0.75)),
            loudness=float(rng.uniform(0.45, 0.85)),
        )


def _phones(words: list[str]) -> list[tuple[str, int]]:
    """(ARPAbet phone without stress, stress 0/1/2 or -1 for consonants) for each word; '|' between words."""
    out: list[tuple[str, int]] = []
    for i, word in enumerate(words):
        if i:
            out.append(("|", -1))
        for p in _cmudict()[word][0]:
            out.append((p[:-1], int(p[-1])) if p[-1].isdigit() else (p, -1))
    return out


def make_sentence(rng: np.random.Generator) -> list[str]:
    """4-9 words drawn from ``WORDS``."""
    return [str(w) for w in rng.choice(WORDS, size=int(rng.integers(4, 10)))]


def synthesize_utterance(words: list[str], spk: SpeakerParams, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Render ``words`` in speaker ``spk``'s voice; returns (T,) float32 audio."""
    frame = int(round(PHONE_FRAME_S * sample_rate))
    tracks = _frame_tracks(_phones(words), spk, rng)  # per-frame controls
    n_frames = len(tracks["f1"])
    n = n_frames * frame

    # F0 contour: declination over the utterance, bumps on stressed vowels, slow random wander.
    t = np.linspace(0.0, 1.0, n_frames)
    semitones = spk.f0_range * (0.5 - t) + 1.5 * tracks["stress"] + np.cumsum(rng.normal(0, 0.08, n_frames))
    f0 = spk.f0_mean * 2.0 ** (semitones / 12.0)
    f0_samples = np.repeat(f0, frame) * (1.0 + rng.normal(0, 0.004, n))  # jitter
    phase = np.cumsum(f0_samples / sample_rate) % 1.0
    oq = spk.open_quotient
    pulse = np.where(phase < oq, 0.5 * (1.0 - np.cos(np.pi * phase / oq)), 0.0)  # Rosenberg-like opening
    pulse = np.where((phase >= oq * 0.6) & (phase < oq), np.cos(0.5 * np.pi * (phase - oq * 0.6) / (oq * 0.4)) * pulse, pulse)
    glottal = np.diff(pulse, prepend=0.0) * 20.0  # lip radiation ~ derivative

    voicing = np.repeat(tracks["voicing"], frame)
    aspiration = np.repeat(tracks["aspiration"], frame)
    noise = rng.normal(0, 1, n)
    source = glottal * voicing + noise * (spk.breathiness * 0.3 * voicing + aspiration * 0.25)

    formants = [tracks["f1"], tracks["f2"], tracks["f3"], np.full(n_frames, 3500.0 * spk.vtl_scale)]
    bandwidths = [70.0, 100.0, 140.0, 200.0]
    voiced = source
    for freq, bw in zip(formants, bandwidths):
        voiced = _resonate(voiced, freq, np.full(n_frames, bw), frame, sample_rate)
    frication = _resonate(rng.normal(0, 1, n) * np.repeat(tracks["frication"], frame),
                          tracks["fric_freq"], tracks["fric_bw"], frame, sample_rate)
    audio = voiced + 0.6 * frication
    audio = np.convolve(audio, np.ones(8) / 8, mode="same") if sample_rate <= 8000 else audio
    pad = np.zeros(int(0.05 * sample_rate))
    audio = np.concatenate([pad, audio, pad])
    return (spk.loudness * audio / (np.abs(audio).max() + 1e-8)).astype(np.float32)


def _resonate(x: np.ndarray, freq: np.ndarray, bw: np.ndarray, frame: int, sample_rate: int) -> np.ndarray:
    """Time-varying Klatt resonator: y[n] = A x[n] + B y[n-1] + C y[n-2], coefficients per frame."""
    y = np.empty_like(x)
    y1 = y2 = 0.0
    nyquist = 0.45 * sample_rate
    for k in range(len(freq)):
        f = min(float(freq[k]), nyquist)
        c = -math.exp(-2.0 * math.pi * bw[k] / sample_rate)
        b = 2.0 * math.exp(-math.pi * bw[k] / sample_rate) * math.cos(2.0 * math.pi * f / sample_rate)
        a = 1.0 - b - c
        seg = slice(k * frame, (k + 1) * frame)
        zi = np.array([b * y1 + c * y2, c * y1])  # DF-II-transposed state from the last two outputs
        out, _ = lfilter([a], [1.0, -b, -c], x[seg], zi=zi)
        y[seg] = out
        y1, y2 = out[-1], out[-2]
    return y


def _frame_tracks(phones: list[tuple[str, int]], spk: SpeakerParams, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-5 ms-frame control tracks (formants, voicing, frication, stress) for a phone sequence."""
    keys = ("f1", "f2", "f3", "voicing", "aspiration", "frication", "fric_freq", "fric_bw", "stress")
    rows: dict[str, list[float]] = {k: [] for k in keys}

    def emit(ms: float, formants: tuple, voicing: float, aspiration: float = 0.0, frication: float = 0.0,
             fric: tuple = (4000, 2000), stress: float = 0.0) -> None:
        n = max(1, int(round(ms / 1000 / PHONE_FRAME_S / spk.rate * rng.uniform(0.85, 1.15))))
        for k, v in zip(keys, (*formants, voicing, aspiration, frication, *fric, stress)):
            rows[k].extend([float(v)] * n)

    for i, (ph, stress) in enumerate(phones):
        nxt = next((p for p, _ in phones[i + 1:] if p in _VOWELS), None)
        locus = _VOWELS[nxt][0] if nxt else _NEUTRAL
        if ph == "|":
            if rng.random() < 0.15:
                emit(60, _NEUTRAL, 0.0)
        elif ph in _VOWELS:
            ms = {1: 120, 2: 95, 0: 70}[stress]
            for target in _VOWELS[ph]:
                emit(ms / len(_VOWELS[ph]) * (1.3 if len(_VOWELS[ph]) > 1 else 1.0), target, 1.0,
                     stress=1.0 if stress == 1 else 0.0)
        elif ph in _SONORANTS:
            target, amp = _SONORANTS[ph]
            emit(60, target, amp)
        elif ph in _FRICATIVES:
            centre, bw, amp, voiced = _FRICATIVES[ph]
            emit(85, locus, 0.3 if voiced else 0.0, aspiration=1.0 if ph == "HH" else 0.0, frication=amp,
                 fric=(centre, bw))
        elif ph in _STOPS:
            centre, voiced = _STOPS[ph]
            emit(45, locus, 0.15 if voiced else 0.0)  # closure (voice bar if voiced)
            emit(15, locus, 0.0, frication=0.8, fric=(centre, 1500))  # release burst
            if ph in ("CH", "JH"):
                emit(60, locus, 0.3 if voiced else 0.0, frication=0.45, fric=(3000, 1400))
            elif not voiced:
                emit(25, locus, 0.0, aspiration=0.8)
    tracks = {k: np.asarray(v) for k, v in rows.items()}
    smooth = np.ones(5) / 5  # 25 ms coarticulation
    for k in ("f1", "f2", "f3", "voicing", "aspiration"):
        tracks[k] = np.convolve(np.pad(tracks[k], 2, mode="edge"), smooth, mode="valid")
    for k in ("f1", "f2", "f3"):
        tracks[k] = tracks[k] * spk.vtl_scale
    return tracks


def _render_speaker(job: tuple[str, int, int, int, int]) -> int:
    """Write every missing utterance of one speaker; returns how many were written."""
    out, index, n_utts, seed, sample_rate = job
    root = Path(out)
    spk = SpeakerParams.draw(index, seed)
    wav_dir = root / "wav48_silence_trimmed" / spk.speaker
    txt_dir = root / "txt" / spk.speaker
    wav_dir.mkdir(parents=True, exist_ok=True)
    txt_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for u in range(n_utts):
        utt_id = f"{spk.speaker}_{u + 1:03d}"
        wav_path = wav_dir / f"{utt_id}_mic1.flac"
        if wav_path.exists():
            continue
        rng = np.random.default_rng([seed, index, u])
        words = make_sentence(rng)
        audio = synthesize_utterance(words, spk, rng, sample_rate)
        write_text(txt_dir / f"{utt_id}.txt", " ".join(words).capitalize() + ".\n")
        write_audio(wav_path, audio, sample_rate)  # last: its presence marks the utterance complete
        written += 1
    return written


@dataclass
class SyntheticConfig:
    """The procedural corpus built at ``data.root`` when ``data.corpus=synthetic`` and it is missing
    (``data.synthetic``).

    Attributes:
        speakers: number of speakers (alternating M/F).
        utterances: utterances per speaker.
        seed: the whole corpus is a function of this seed.
        sample_rate: of the written FLAC files.
    """

    speakers: int = 40
    utterances: int = 30
    seed: int = 0
    sample_rate: int = 16000


def build_synthetic_corpus(out: str | Path, speakers: int = SyntheticConfig.speakers,
                           utterances: int = SyntheticConfig.utterances, seed: int = SyntheticConfig.seed,
                           sample_rate: int = SyntheticConfig.sample_rate, workers: int = 2,
                           progress: bool = True) -> Path:
    """Write (or complete) a synthetic corpus in VCTK-0.92 layout.

    Args:
        out: corpus root; created (with its parents) if missing. An interrupted build is completed,
            not restarted; a finished corpus of another seed or sample rate is refused.
        speakers: number of speakers (alternating M/F).
        utterances: utterances per speaker.
        seed: the whole corpus is a function of this seed.
        sample_rate: of the written FLAC files.
        workers: processes used for rendering.
        progress: show a progress bar.

    Returns:
        The corpus root.

    Raises:
        DataError: ``out`` already holds a corpus of another seed or sample rate.
    """
    root = Path(out)
    params_file = root / "speaker-params.json"
    if params_file.is_file():
        old = json.loads(params_file.read_text())
        if (old["seed"], old["sample_rate"]) != (seed, sample_rate):
            raise DataError(f"{root} already holds a synthetic corpus with seed={old['seed']} and "
                            f"sample_rate={old['sample_rate']}; choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    params = [SpeakerParams.draw(i, seed) for i in range(speakers)]
    jobs = [(str(root), i, utterances, seed, sample_rate) for i in range(speakers)]
    bar = tqdm(total=speakers, desc="synthetic corpus", unit="spk", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_render_speaker, jobs):
                bar.update()
    else:
        for job in jobs:
            _render_speaker(job)
            bar.update()
    bar.close()
    lines = ["ID  AGE  GENDER  ACCENTS  REGION  COMMENTS"]
    lines += [f"{p.speaker}  30  {p.gender}    Synthetic  Procedural  f0={p.f0_mean:.0f}Hz" for p in params]
    write_text(root / "speaker-info.txt", "\n".join(lines) + "\n")
    write_json(root / "speaker-params.json", {"seed": seed, "sample_rate": sample_rate, "utterances": utterances,
                                              "speakers": [asdict(p) for p in params]})
    return root


def iter_speaker_params(root: str | Path) -> Iterator[SpeakerParams]:
    """The true parameters stored with a synthetic corpus."""
    data = json.loads((Path(root) / "speaker-params.json").read_text())
    for row in data["speakers"]:
        yield SpeakerParams(**row)
