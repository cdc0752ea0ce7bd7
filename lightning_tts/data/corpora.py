"""Corpus readers: VCTK (0.92 and 0.80), LibriTTS, LJSpeech and manifests -> ``Utterance`` records.

A reader never crashes on one bad file: a missing transcript, unreadable or corrupt audio, empty text
or a clip outside the duration bounds is skipped and counted in a ``SkipReport``, summarised at the
end in one line (and a JSON report). A corpus with no usable utterance is a ``DataError``.

Reading has two steps: ``listing`` (paths and transcripts; no audio file opened) and ``probe`` (the
duration, from the audio header unless the corpus states it). The feature cache re-checks a corpus on
every run by listing it and probing only the recordings that are new or changed.

Readers register themselves by name (``@register_corpus("vctk")``); ``data.corpus`` picks one.
"""
from __future__ import annotations

import csv
import json
import os
import re
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

from lightning_tts.audio import audio_info
from lightning_tts.errors import AudioError, ConfigError, DataError


@dataclass(slots=True)
class Utterance:
    """One recording: where it is, what is said, who says it, how long it is (seconds).

    The last three fields are the fingerprint of the audio file the cached features were made from
    (filled in by the feature cache; -1/None for an utterance that no cache has seen): its size in
    bytes, its modification time in ns, and the SHA-256 of its bytes.
    """

    utterance_id: str
    speaker: str
    path: str
    text: str
    duration: float
    size: int = -1
    mtime_ns: int = -1
    sha256: Optional[str] = None


@dataclass(slots=True)
class Candidate:
    """A listed recording whose audio has not been opened yet.

    Attributes:
        utterance_id: id within its speaker.
        speaker: speaker id.
        path: the audio file.
        text: the transcript, stripped and non-empty.
        duration: seconds when the corpus states it (manifests), else None (read from the header).
    """

    utterance_id: str
    speaker: str
    path: str
    text: str
    duration: Optional[float]

    @property
    def key(self) -> tuple[str, str]:
        """(speaker, utterance_id): what names one feature file."""
        return self.speaker, self.utterance_id


@dataclass
class SkipReport:
    """Counts (and a few examples) of utterances a reader or the feature cache skipped, by reason."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    max_examples: int = 20

    def add(self, reason: str, item: str) -> None:
        """Count one skipped item under ``reason``."""
        self.counts[reason] += 1
        if len(self.examples[reason]) < self.max_examples:
            self.examples[reason].append(item)

    @property
    def total(self) -> int:
        """Number of skipped items."""
        return sum(self.counts.values())

    def merge(self, other: "SkipReport") -> None:
        """Add another report's counts and examples to this one."""
        for reason, n in other.counts.items():
            self.counts[reason] += n
            self.examples[reason].extend(other.examples[reason][: self.max_examples - len(self.examples[reason])])

    def describe(self) -> str:
        """'3 (missing transcript: 2, unreadable audio: 1)' or '0'."""
        if not self.total:
            return "0"
        return f"{self.total} (" + ", ".join(f"{r}: {n}" for r, n in sorted(self.counts.items())) + ")"

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"skipped": self.total, "by_reason": dict(self.counts), "examples": dict(self.examples)}


@dataclass
class CorpusChanges:
    """What changed in a corpus since its feature cache was last brought up to date.

    Attributes:
        checked: recordings listed (with a transcript).
        new: recordings the last index did not know.
        changed: recordings whose audio (path, size, mtime, or content under ``--verify``) or transcript changed.
        removed: recordings of the last index no longer listed (file or transcript deleted).
        extracted: feature files computed by this update.
        rebuilt: of those, files of unchanged recordings that were missing, damaged or stale.
        previous: why there was no usable last index ("" when there was one).
    """

    checked: int = 0
    new: int = 0
    changed: int = 0
    removed: int = 0
    extracted: int = 0
    rebuilt: int = 0
    previous: str = ""

    @property
    def any(self) -> bool:
        """True when the index or a feature file had to be updated."""
        return bool(self.new or self.changed or self.removed or self.extracted or self.previous)

    def describe(self) -> str:
        """One line: what changed ('+12 new, 3 changed, 1 removed; ...') or that nothing did."""
        extracted = f"{self.extracted} feature file{'' if self.extracted == 1 else 's'} extracted"
        if self.previous:
            return f"feature cache index built ({self.previous}): {self.checked} recordings listed, {extracted}"
        if not self.any:
            return f"corpus unchanged since the last index ({self.checked} recordings checked)"
        line = (f"corpus changes since the last index: +{self.new} new, {self.changed} changed, "
                f"{self.removed} removed; {extracted}")
        return line + (f" ({self.rebuilt} damaged or missing, of unchanged recordings)" if self.rebuilt else "")


@dataclass
class CorpusIndex:
    """What a reader found: usable utterances, per-speaker metadata, what it skipped, and (when it comes
    from the feature cache) what changed since the last index."""

    name: str
    root: str
    utterances: list[Utterance]
    speakers: dict[str, dict[str, str]]
    skipped: SkipReport
    changes: Optional[CorpusChanges] = None

    def summary(self) -> str:
        """One line: counts of utterances, speakers, hours and skips."""
        hours = sum(u.duration for u in self.utterances) / 3600
        n_spk = len({u.speaker for u in self.utterances})
        return (f"{self.name}: {len(self.utterances)} utterances from {n_spk} speakers ({hours:.2f} h) "
                f"in {self.root}; skipped {self.skipped.describe()}")


class CorpusReader(ABC):
    """Base class: subclasses yield candidate utterances; this class validates and counts them.

    Args:
        root: the corpus directory (a manifest file for ``ManifestCorpus``).
        min_duration: shorter clips (seconds) are skipped as "too short".
        max_duration: longer clips are skipped as "too long".
    """

    name = "corpus"

    def __init__(self, root: str | Path, min_duration: float = 0.3, max_duration: float = 20.0) -> None:
        self.root = Path(root).expanduser()
        self.min_duration = min_duration
        self.max_duration = max_duration

    @classmethod
    def from_config(cls, data_cfg: Mapping[str, Any]) -> "CorpusReader":
        """Build from the ``data`` config section."""
        return cls(data_cfg["root"], min_duration=data_cfg["min_duration"], max_duration=data_cfg["max_duration"])

    @abstractmethod
    def candidates(self, report: SkipReport) -> Iterator[tuple[str, str, str | Path, Optional[str], Optional[float]]]:
        """Yield (utterance_id, speaker, audio path, text or None, duration or None); open no audio file."""

    def speaker_info(self) -> dict[str, dict[str, str]]:
        """Per-speaker metadata (gender, accent, ...) where the corpus has it."""
        return {}

    def read(self) -> CorpusIndex:
        """Scan the corpus: ``listing`` and then ``probe`` of every listed recording.

        Raises:
            DataError: the root does not exist, or no utterance is usable.
        """
        listed, report = self.listing()
        utterances = []
        for cand in listed:
            duration, reason = self.probe(cand)
            if reason is not None:
                report.add(reason, cand.path)
            else:
                utterances.append(Utterance(cand.utterance_id, cand.speaker, cand.path, cand.text, duration))
        if not utterances:
            raise DataError(f"no usable utterances in {self.name} corpus at {self.root} "
                            f"(skipped {report.describe()})")
        utterances.sort(key=lambda u: (u.speaker, u.utterance_id))
        return CorpusIndex(self.name, str(self.root), utterances, self.speaker_info(), report)

    def listing(self) -> tuple[list[Candidate], SkipReport]:
        """The recordings with a non-empty transcript, without opening any audio file (cheap: paths and text).

        Returns:
            The candidates in the reader's order, and the report of what was skipped while listing
            (missing transcript, empty text, unexpected file name).

        Raises:
            DataError: the root does not exist or is not a tree of this corpus.
        """
        if not self.root.exists():
            raise DataError(f"{self.name} corpus root does not exist: {self.root}")
        report = SkipReport()
        listed = []
        for utt_id, speaker, path, text, duration in self.candidates(report):
            if text is None:
                report.add("missing transcript", str(path))
                continue
            text = text.strip()
            if not text:
                report.add("empty text", str(path))
                continue
            listed.append(Candidate(utt_id, speaker, str(path), text, None if duration is None else float(duration)))
        return listed, report

    def probe(self, cand: Candidate) -> tuple[Optional[float], Optional[str]]:
        """Duration of a listed recording (from its header unless the corpus states it) and whether it is usable.

        Returns:
            (seconds or None when unreadable, None or the skip reason: "unreadable audio", "too short", "too long").
        """
        duration = cand.duration
        if duration is None:
            try:
                frames, sr = audio_info(cand.path)
            except AudioError:
                return None, "unreadable audio"
            duration = frames / sr
        if duration < self.min_duration:
            return duration, "too short"
        if duration > self.max_duration:
            return duration, "too long"
        return duration, None


CORPORA: dict[str, type[CorpusReader]] = {}


def register_corpus(name: str) -> Callable[[type[CorpusReader]], type[CorpusReader]]:
    """Class decorator: make a reader available as ``data.corpus=name``."""

    def wrap(cls: type[CorpusReader]) -> type[CorpusReader]:
        cls.name = name
        CORPORA[name] = cls
        return cls

    return wrap


def _read_transcript(path: str | os.PathLike) -> Optional[str]:
    """A transcript file's text (UTF-8, stripped), or None when it is missing or undecodable.

    Read with bare system calls: every run reads every transcript of the corpus (a transcript edit
    must reach the index), so this is the re-check's largest cost per recording.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _sorted_entries(directory: str | os.PathLike, dirs: bool, suffix: str = "") -> list[os.DirEntry]:
    """Subdirectories (``dirs``) or files ending in ``suffix`` of a directory, sorted by name; [] if unreadable.

    The order and matches of ``sorted(Path.glob("*"))`` (or ``"*<suffix>"``), listed with ``os.scandir``.
    """
    try:
        with os.scandir(directory) as it:
            entries = [e for e in it if e.name.endswith(suffix) and e.is_dir() == dirs]
    except OSError:
        return []
    return sorted(entries, key=lambda e: e.name)


def _read_table(path: Path, sep: Optional[str] = None, comment: str = "") -> Iterable[list[str]]:
    """Rows of a whitespace- (or ``sep``-) separated text table, skipping blank and comment lines."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or (comment and line.lstrip().startswith(comment)):
            continue
        rows.append([c.strip() for c in (line.split(sep) if sep else line.split())])
    return rows


@register_corpus("vctk")
class VCTKCorpus(CorpusReader):
    """CSTR VCTK: 0.92 (``wav48_silence_trimmed/p225/p225_001_mic1.flac``) or 0.80 (``wav48/p225/*.wav``).

    Transcripts are ``txt/p225/p225_001.txt``; ``speaker-info.txt`` gives age, gender and accent.

    Args:
        mic: ``mic1`` or ``mic2`` (0.92 only; 0.80 has one microphone).
    """

    def __init__(self, root: str | Path, mic: str = "mic1", **kwargs: float) -> None:
        super().__init__(root, **kwargs)
        if mic not in ("mic1", "mic2"):
            raise DataError(f"data.mic must be mic1 or mic2, got {mic!r}")
        self.mic = mic

    @classmethod
    def from_config(cls, data_cfg: Mapping[str, Any]) -> "VCTKCorpus":
        return cls(data_cfg["root"], mic=data_cfg["mic"], min_duration=data_cfg["min_duration"],
                   max_duration=data_cfg["max_duration"])

    def candidates(self, report: SkipReport) -> Iterator[tuple[str, str, str | Path, Optional[str], Optional[float]]]:
        if (self.root / "wav48_silence_trimmed").is_dir():
            suffix, strip = f"_{self.mic}.flac", f"_{self.mic}"
            audio_dir = self.root / "wav48_silence_trimmed"
        elif (self.root / "wav48").is_dir():
            suffix, strip, audio_dir = ".wav", "", self.root / "wav48"
        else:
            raise DataError(f"not a VCTK tree (no wav48_silence_trimmed/ or wav48/): {self.root}")
        txt_dir = str(self.root / "txt")
        for speaker_dir in _sorted_entries(audio_dir, dirs=True):
            for entry in _sorted_entries(speaker_dir.path, dirs=False, suffix=suffix):
                stem = os.path.splitext(entry.name)[0]
                utt_id = stem[: -len(strip)] if strip else stem
                text = _read_transcript(f"{txt_dir}{os.sep}{speaker_dir.name}{os.sep}{utt_id}.txt")
                yield utt_id, speaker_dir.name, entry.path, text, None

    def speaker_info(self) -> dict[str, dict[str, str]]:
        rows = list(_read_table(self.root / "speaker-info.txt"))
        info = {}
        for row in rows[1:]:  # header: ID AGE GENDER ACCENTS REGION COMMENTS
            if len(row) < 3:
                continue
            speaker = row[0] if not row[0].isdigit() else f"p{row[0]}"  # 0.80 lists bare numbers
            info[speaker] = {"age": row[1], "gender": row[2], "accent": row[3] if len(row) > 3 else ""}
        return info


_LIBRITTS_NAME = re.compile(r"^(\d+)_(\d+)_\d+_\d+$")


@register_corpus("libritts")
class LibriTTSCorpus(CorpusReader):
    """LibriTTS: ``<subset>/<spk>/<chapter>/<spk>_<chapter>_<utt>_<seg>.wav`` + ``.normalized.txt``.

    Args:
        subsets: subset directories under ``root`` read together, e.g. ``["train-clean-100", "train-clean-360"]``.
    """

    def __init__(self, root: str | Path, subsets: Iterable[str] = ("train-clean-100",), **kwargs: float) -> None:
        super().__init__(root, **kwargs)
        self.subsets = list(subsets)

    @classmethod
    def from_config(cls, data_cfg: Mapping[str, Any]) -> "LibriTTSCorpus":
        return cls(data_cfg["root"], subsets=data_cfg["subsets"], min_duration=data_cfg["min_duration"],
                   max_duration=data_cfg["max_duration"])

    def candidates(self, report: SkipReport) -> Iterator[tuple[str, str, str | Path, Optional[str], Optional[float]]]:
        missing = [s for s in self.subsets if not (self.root / s).is_dir()]
        if missing:
            raise DataError(f"LibriTTS subset(s) not found under {self.root}: {', '.join(missing)}")
        for subset in self.subsets:
            for speaker_dir in _sorted_entries(self.root / subset, dirs=True):
                for chapter_dir in _sorted_entries(speaker_dir.path, dirs=True):
                    for entry in _sorted_entries(chapter_dir.path, dirs=False, suffix=".wav"):
                        stem = os.path.splitext(entry.name)[0]
                        if not _LIBRITTS_NAME.match(stem):
                            report.add("unexpected file name", entry.path)
                            continue
                        text = _read_transcript(f"{chapter_dir.path}{os.sep}{stem}.normalized.txt")
                        yield stem, speaker_dir.name, entry.path, text, None

    def speaker_info(self) -> dict[str, dict[str, str]]:
        info = {}
        for row in _read_table(self.root / "SPEAKERS.txt", sep="|", comment=";"):
            if len(row) >= 3:
                info[row[0]] = {"gender": row[1], "subset": row[2], "name": row[3] if len(row) > 3 else ""}
        return info


@register_corpus("ljspeech")
class LJSpeechCorpus(CorpusReader):
    """LJSpeech 1.1: ``metadata.csv`` (id|text|normalized text) and ``wavs/<id>.wav``; one speaker ``LJ``."""

    def candidates(self, report: SkipReport) -> Iterator[tuple[str, str, str | Path, Optional[str], Optional[float]]]:
        metadata = self.root / "metadata.csv"
        if not metadata.is_file():
            raise DataError(f"not an LJSpeech tree (no metadata.csv): {self.root}")
        for row in _read_table(metadata, sep="|"):
            text = row[2] if len(row) > 2 and row[2] else (row[1] if len(row) > 1 else None)
            yield row[0], "LJ", self.root / "wavs" / f"{row[0]}.wav", text, None

    def speaker_info(self) -> dict[str, dict[str, str]]:
        return {"LJ": {"gender": "F"}}


_MANIFEST_ALIASES = {"audio_filepath": "audio", "path": "audio", "speaker_id": "speaker", "transcript": "text"}


@register_corpus("manifest")
class ManifestCorpus(CorpusReader):
    """A CSV (header ``audio,text,speaker[,duration]``) or JSONL manifest; ``root`` is the file.

    Relative audio paths are resolved against the manifest's directory. When a row gives the
    duration the audio is not opened while indexing (so indexing 375k rows takes seconds); a
    missing or corrupt file is then caught by ``preprocess``. NeMo-style keys
    (``audio_filepath``, ``speaker_id``) are accepted.
    """

    def candidates(self, report: SkipReport) -> Iterator[tuple[str, str, str | Path, Optional[str], Optional[float]]]:
        if not self.root.is_file():
            raise DataError(f"manifest is not a file: {self.root}")
        base = self.root.parent
        for line_no, row in self._rows():
            row = {_MANIFEST_ALIASES.get(k, k): v for k, v in row.items()}
            missing = [k for k in ("audio", "speaker") if not row.get(k)]
            if missing:
                raise DataError(f"{self.root}:{line_no}: row lacks {', '.join(missing)}")
            path = Path(row["audio"])
            path = path if path.is_absolute() else base / path
            duration = row.get("duration")
            try:
                duration = float(duration) if duration not in (None, "") else None
            except ValueError as err:
                raise DataError(f"{self.root}:{line_no}: duration is not a number: {duration!r}") from err
            yield (str(row.get("id") or path.stem), str(row["speaker"]), path, row.get("text"), duration)

    def _rows(self) -> Iterator[tuple[int, dict]]:
        """(line number, row dict) for CSV or JSONL."""
        with self.root.open(encoding="utf-8") as f:
            if self.root.suffix.lower() in (".jsonl", ".json"):
                for line_no, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield line_no, json.loads(line)
                        except json.JSONDecodeError as err:
                            raise DataError(f"{self.root}:{line_no}: invalid JSON: {err.msg}") from err
            else:
                reader = csv.DictReader(f)
                if not reader.fieldnames or not {"audio", "audio_filepath", "path"} & set(reader.fieldnames):
                    raise DataError(f"{self.root}: CSV header must name audio,text,speaker columns; "
                                    f"got {reader.fieldnames}")
                for line_no, row in enumerate(reader, 2):
                    yield line_no, row


GENERATED_CORPORA = ("synthetic", "espeak")  # built at data.root by the package, in VCTK-0.92 layout


def reader_key(name: str) -> str:
    """The registered reader of corpus ``name`` (the generated corpora ``synthetic`` and ``espeak``
    are read as VCTK).

    Raises:
        ConfigError: unknown corpus name.
    """
    key = "vctk" if name in GENERATED_CORPORA else name
    if key not in CORPORA:
        raise ConfigError(f"unknown corpus {name!r} in data.corpus (known: {', '.join(GENERATED_CORPORA)}, "
                          f"{', '.join(sorted(CORPORA))})")
    return key


def build_reader(data_cfg: Mapping[str, Any]) -> CorpusReader:
    """The reader registered as ``data.corpus`` (a generated corpus is read as its VCTK layout).

    Raises:
        ConfigError: unknown corpus name.
    """
    name = data_cfg["corpus"]
    key = reader_key(name)
    reader = CORPORA[key].from_config(data_cfg)
    reader.name = name
    return reader
