"""Feature cache and the ``preprocess`` pipeline: corpus -> index -> cached log-mels, kept in step with the corpus.

Layout (one directory per corpus reading and per feature parameter set, so nothing ever mixes)::

    <cache_dir>/<corpus>-<corpus_key>/features-<feature_key>/
        <speaker>/<utterance_id>.pt   # {"mel": (frames, n_mels) fp16, "pitch"?: (frames,), "energy"?: (frames,),
                                      #  "format": 2, "source": {"path", "size", "mtime_ns", "sha256"}}
        index.json                    # every listed recording with its fingerprint and verdict (written last)
        report.json                   # what was skipped and why

Every run (``prepare``: fit, test, evaluate, embed; ``preprocess``) brings the cache up to date with the
corpus on disk before anything reads it. The corpus is *listed* (paths and transcripts, no audio
opened) and each recording's fingerprint (audio path, size, mtime_ns; transcript) compared with the
index: new and changed recordings are probed (duration from the header) and extracted, removed ones
leave the index (their feature files are deleted), and unchanged ones cost two ``os.stat`` calls
(the audio and its feature file) -- no audio is decoded and no header read. Earlier verdicts are kept
with the fingerprint, so an unchanged clip that was too short is not probed again. One line says what
changed (``CorpusChanges.describe``).

Each feature file records the fingerprint of the audio it was computed from, including the SHA-256 of
those bytes, so a feature file never outlives its audio: a file whose recorded source differs from
the index is re-extracted, and ``preprocess --verify`` hashes every audio file to catch content that
changed under the same size and mtime (filesystems with unreliable times). The index also records
each feature file's size and mtime_ns; a file that no longer matches (truncated by a killed copy,
deleted, replaced) is re-read and rebuilt unless it is intact. A feature file that fails to load
during a run raises a one-line ``DataError`` naming it and is marked (its mtime set to 0) so that the
next run rebuilds it.

Every file is written to a temporary name and renamed, so a file that exists is complete: an
interrupted ``preprocess`` resumes by computing only what is missing (a feature file without an
index entry is reused when its recorded source matches the audio). Features are loaded lazily, one
file per utterance, with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch

from lightning_tts.atomic import atomic_path, file_sha256, write_json, write_text
from lightning_tts.audio import FeatureExtractor, FeatureParams, read_audio
from lightning_tts.data.corpora import (Candidate, CorpusChanges, CorpusIndex, CorpusReader, SkipReport, Utterance,
                                        GENERATED_CORPORA, build_reader, reader_key)
from lightning_tts.data.espeak import EspeakConfig, build_espeak_corpus
from lightning_tts.data.synthetic import build_synthetic_corpus
from lightning_tts.errors import AudioError, ConfigError, DataError, TextError
from lightning_tts.schema import build as schema_build
from lightning_tts.text import TextProcessor

log = logging.getLogger(__name__)
INDEX_VERSION = 2  # 2: fingerprints and verdicts of every listed recording; 1 (usable utterances only) is rebuilt
FEATURE_FORMAT = 2  # 2: "format" and "source" keys; files without them are re-extracted
PROBE_REASONS = frozenset({"unreadable audio", "too short", "too long"})
UNPRONOUNCEABLE = "unpronounceable text"
UNDECODABLE = "undecodable audio"
RECORD_COLUMNS = ("utterance_id", "speaker", "path", "text", "duration", "size", "mtime_ns", "sha256", "reason",
                  "detail", "feature_size", "feature_mtime_ns")


def corpus_root(data_cfg: Mapping[str, Any]) -> Path:
    """``data.root`` as a path.

    Raises:
        ConfigError: it is not set (the real-corpus presets leave it to the user).
    """
    if data_cfg["root"] is None:
        raise ConfigError(f"data.root is required for corpus {data_cfg['corpus']} (set data.root=/path/to/corpus)")
    return Path(data_cfg["root"]).expanduser()


def corpus_key(data_cfg: Mapping[str, Any]) -> str:
    """Name of a corpus reading: the reader, its root and every option that changes what it reads."""
    corpus = data_cfg["corpus"]
    ident = {
        "corpus": corpus,
        "root": str(corpus_root(data_cfg).resolve()),
        "mic": data_cfg["mic"] if corpus in ("vctk", *GENERATED_CORPORA) else None,
        "subsets": list(data_cfg["subsets"]) if corpus == "libritts" else None,
        "min_duration": data_cfg["min_duration"],
        "max_duration": data_cfg["max_duration"],
    }
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return f"{corpus}-{digest}"


def file_stat(path: str | os.PathLike) -> tuple[int, int]:
    """(size in bytes, mtime in ns) of a file, or (-1, -1) when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _same_source(source: Mapping[str, Any], path: str, size: int, mtime_ns: int, sha256: Optional[str]) -> bool:
    """Whether a feature file's recorded source is this audio (the hash is compared only when known)."""
    return (source.get("path") == path and source.get("size") == size and source.get("mtime_ns") == mtime_ns
            and (sha256 is None or source.get("sha256") == sha256))


class FeatureCache:
    """Per-utterance cached features for one corpus reading and one ``FeatureParams``.

    Args:
        directory: ``<cache_dir>/<corpus key>/features-<feature key>``; see ``for_config``.
        params: the feature parameters the files hold.
    """

    def __init__(self, directory: str | Path, params: FeatureParams) -> None:
        self.directory = Path(directory)
        self.params = params

    @classmethod
    def for_config(cls, data_cfg: Mapping[str, Any], params: FeatureParams) -> "FeatureCache":
        """The cache a data config and feature parameters map to."""
        root = Path(data_cfg["cache_dir"]).expanduser() / corpus_key(data_cfg) / f"features-{params.key()}"
        return cls(root, params)

    @property
    def index_path(self) -> Path:
        """Where the index of listed recordings is written, last of all."""
        return self.directory / "index.json"

    def path(self, utt: Utterance | Candidate | Record) -> Path:
        """Feature file of one utterance."""
        return self.directory / utt.speaker / f"{utt.utterance_id}.pt"

    def read(self, path: Path) -> dict[str, Any]:
        """The stored dict of one feature file, checked: format, a (frames, n_mels) mel, a recorded source.

        Raises:
            DataError: "damaged cached features PATH: what is wrong" (missing, truncated, foreign, old format).
        """
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch.load raises OSError, RuntimeError, EOFError, UnpicklingError, ValueError...
            raise DataError(f"damaged cached features {path}: {_first_line(err)}") from err
        if (not isinstance(feats, dict) or feats.get("format") != FEATURE_FORMAT
                or not isinstance(feats.get("source"), dict)):
            raise DataError(f"damaged cached features {path}: not a format-{FEATURE_FORMAT} feature file")
        mel = feats.get("mel")
        if not isinstance(mel, torch.Tensor) or mel.dim() != 2 or mel.shape[1] != self.params.n_mels:
            raise DataError(f"damaged cached features {path}: no (frames, {self.params.n_mels}) mel")
        return feats

    def load(self, utt: Utterance) -> dict[str, torch.Tensor]:
        """Features of one utterance, float32: ``mel`` (frames, n_mels), optional ``pitch``/``energy`` (frames,).

        A damaged file is marked (mtime set to 0) so that the next ``prepare`` re-reads and rebuilds it;
        the error stops this run with one line rather than training on a hole.

        Raises:
            DataError: the file is missing or damaged (it names the file and says to rerun), or it
                was made from other audio than ``utt``'s fingerprint (the cache was updated after
                this run read its index).
        """
        path = self.path(utt)
        try:
            feats = self.read(path)
        except DataError as err:
            _mark_damaged(path)
            raise DataError(f"{err}; rerun the command to rebuild it") from err
        if utt.size >= 0 and not _same_source(feats["source"], utt.path, utt.size, utt.mtime_ns, utt.sha256):
            raise DataError(f"cached features {path} were made from other audio than the index's {utt.path}; "
                            f"rerun the command to re-read the corpus")
        return {k: v.float() for k, v in feats.items() if isinstance(v, torch.Tensor)}

    def intact_source(self, utt: Utterance) -> Optional[dict[str, Any]]:
        """The recorded source of ``utt``'s feature file if it is readable and made from ``utt``'s audio, else None."""
        try:
            source = self.read(self.path(utt))["source"]
        except DataError:
            return None
        return source if _same_source(source, utt.path, utt.size, utt.mtime_ns, utt.sha256) else None

    def extract(self, utterances: Sequence[Utterance], workers: int = 2,
                progress: bool = True) -> list[tuple[Optional[str], Optional[str]]]:
        """Compute and atomically (re)write the feature files of ``utterances``.

        Each file records ``utt``'s fingerprint (path, size, mtime_ns) and the SHA-256 of the bytes
        that were decoded.

        Args:
            utterances: what to extract (an existing file is replaced).
            workers: processes (1 = in this process).
            progress: show a progress bar.

        Returns:
            Per utterance, in order: (SHA-256 of its audio, None) or (None, why it could not be decoded).
        """
        from tqdm import tqdm

        if not utterances:
            return []
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*/.*.tmp-*"):  # left by a killed run; never read as valid
            stale.unlink(missing_ok=True)
        for speaker in {u.speaker for u in utterances}:
            (self.directory / speaker).mkdir(exist_ok=True)
        jobs = [(u.path, str(self.path(u)), u.size, u.mtime_ns) for u in utterances]
        chunk = max(1, min(64, len(jobs) // (8 * max(1, workers)) or 1))
        batches = [jobs[i: i + chunk] for i in range(0, len(jobs), chunk)]
        results: list[tuple[Optional[str], Optional[str]]] = []
        with tqdm(total=len(jobs), desc="features", unit="utt", disable=not progress, smoothing=0.05) as bar:
            if workers > 1 and len(batches) > 1:
                with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                         initargs=(self.params,)) as pool:
                    for result in pool.map(_extract_batch, batches):
                        results.extend(result)
                        bar.update(len(result))
            else:
                _init_worker(self.params, threads=None)
                for batch in batches:
                    result = _extract_batch(batch)
                    results.extend(result)
                    bar.update(len(result))
        return results


def _mark_damaged(path: Path) -> None:
    """Set a damaged feature file's mtime to 0 so that the next run's stat check re-reads it (best effort)."""
    with contextlib.suppress(OSError):
        os.utime(path, ns=(0, 0))


_EXTRACTOR: Optional[FeatureExtractor] = None


def _init_worker(params: FeatureParams, threads: Optional[int] = 1) -> None:
    """Per-process feature extractor (one torch thread per worker process)."""
    global _EXTRACTOR
    if threads is not None:
        torch.set_num_threads(threads)
    _EXTRACTOR = FeatureExtractor(params)


def _extract_batch(jobs: list[tuple[str, str, int, int]]) -> list[tuple[Optional[str], Optional[str]]]:
    """Compute and atomically save features for (audio path, cache path, size, mtime_ns) jobs.

    Returns:
        Per job: (SHA-256 of the audio, None) or (None, error); errors are returned, not raised.
    """
    assert _EXTRACTOR is not None
    params = _EXTRACTOR.params
    out: list[tuple[Optional[str], Optional[str]]] = []
    for audio_path, cache_path, size, mtime_ns in jobs:
        try:
            wav = read_audio(audio_path, params.sample_rate)
            if not params.reflectable(wav.numel()):  # a header that claimed more: nothing to train on
                out.append((None, f"no features from {audio_path}: {wav.numel()} samples at {params.sample_rate} "
                                  f"Hz, shorter than half an STFT window (n_fft {params.n_fft})"))
                continue
            feats = _EXTRACTOR(wav)
            digest = file_sha256(audio_path)
        except AudioError as err:
            out.append((None, str(err)))
            continue
        except (OSError, RuntimeError) as err:  # vanished since it was decoded
            out.append((None, f"no features from {audio_path}: {_first_line(err)}"))
            continue
        feats["mel"] = feats["mel"].half()
        stored = {**feats, "format": FEATURE_FORMAT,
                  "source": {"path": audio_path, "size": size, "mtime_ns": mtime_ns, "sha256": digest}}
        with atomic_path(cache_path) as tmp:
            torch.save(stored, tmp)
        out.append((digest, None))
    return out


def ensure_corpus(data_cfg: Mapping[str, Any], progress: bool = True) -> None:
    """Build a generated corpus (``synthetic``, ``espeak``) at ``data.root`` if it is the configured
    corpus and is missing.

    Raises:
        ConfigError: unknown corpus name.
        DataError: a real corpus whose root does not exist.
    """
    reader_key(data_cfg["corpus"])  # an unknown name is the first thing to report
    root = corpus_root(data_cfg)
    if data_cfg["corpus"] == "synthetic":
        complete = (root / "speaker-params.json").is_file()
        if not complete:
            syn = data_cfg["synthetic"]
            log.info("building the synthetic corpus at %s", root)
            build_synthetic_corpus(root, speakers=syn["speakers"], utterances=syn["utterances"], seed=syn["seed"],
                                   sample_rate=syn["sample_rate"], workers=data_cfg["preprocess_workers"],
                                   progress=progress)
    elif data_cfg["corpus"] == "espeak":
        if not (root / "espeak-voices.json").is_file():
            log.info("building the espeak corpus at %s", root)
            build_espeak_corpus(root, schema_build(EspeakConfig, data_cfg["espeak"], "data.espeak"),
                                workers=data_cfg["preprocess_workers"], progress=progress)
    elif not root.exists():
        raise DataError(f"data.root does not exist: {root} (corpus {data_cfg['corpus']})")


@dataclass(slots=True)
class Record:
    """What the index knows about one listed recording: its fingerprint and its verdict.

    Attributes:
        utterance_id, speaker, path, text: as listed.
        duration: seconds (None when the audio header was unreadable).
        size, mtime_ns: ``os.stat`` of the audio when it was listed ((-1, -1): missing).
        sha256: SHA-256 of the audio bytes (set when features were extracted or ``--verify`` hashed it).
        reason: why it is skipped (a ``SkipReport`` reason), None when usable.
        detail: the skip report's example for it ("" when usable).
        feature_size, feature_mtime_ns: ``os.stat`` of its feature file when usable, else (-1, -1).
    """

    utterance_id: str
    speaker: str
    path: str
    text: str
    duration: Optional[float]
    size: int
    mtime_ns: int
    sha256: Optional[str] = None
    reason: Optional[str] = None
    detail: str = ""
    feature_size: int = -1
    feature_mtime_ns: int = -1

    def utterance(self) -> Utterance:
        """The usable utterance this record describes (its duration must be known)."""
        assert self.duration is not None
        return Utterance(self.utterance_id, self.speaker, self.path, self.text, self.duration, self.size,
                         self.mtime_ns, self.sha256)

    def skip(self, reason: str, detail: Optional[str] = None) -> None:
        """Mark as skipped for ``reason`` (the report example defaults to the audio path)."""
        self.reason, self.detail = reason, self.path if detail is None else detail

    def row(self) -> list[Any]:
        """JSON row, in ``RECORD_COLUMNS`` order."""
        return [getattr(self, name) for name in RECORD_COLUMNS]


@dataclass
class PreviousIndex:
    """The last index of a cache as the next update reads it.

    Attributes:
        records: by (speaker, utterance_id); empty when there is no usable index.
        phonemes: the text setting its pronounceability verdicts were made with.
        speakers: its per-speaker metadata.
        missing: why there is no usable index ("" when there is one).
    """

    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    phonemes: Optional[bool] = None
    speakers: dict[str, dict[str, str]] = field(default_factory=dict)
    corpus: str = ""
    root: str = ""
    missing: str = ""


def read_previous(cache: FeatureCache) -> PreviousIndex:
    """The cache's last index; an absent, older-format or unreadable one is reported, never raised."""
    path = cache.index_path
    if not path.is_file():
        return PreviousIndex(missing="no index yet")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return PreviousIndex(missing=f"unreadable index {path}: {_first_line(err)}")
    version = data.get("version") if isinstance(data, dict) else None
    if version != INDEX_VERSION:
        return PreviousIndex(missing=f"index format {version} replaced by {INDEX_VERSION}")
    try:
        if tuple(data["columns"]) != RECORD_COLUMNS:
            raise ValueError(f"columns {data['columns']}")
        records = {(row[1], row[0]): Record(*row) for row in data["recordings"]}
        return PreviousIndex(records, bool(data["phonemes"]), dict(data["speakers"]), str(data["corpus"]),
                             str(data["root"]))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return PreviousIndex(missing=f"unreadable index {path}: {_first_line(err)}")


def audio_changed(prev: Record, path: str, size: int, mtime_ns: int, sha256: Optional[str]) -> Optional[bool]:
    """Whether a recording's audio differs from its record: True, False, or None when only a hash could tell
    and the record has none (``--verify`` on a recording never hashed)."""
    if (prev.path, prev.size, prev.mtime_ns) != (path, size, mtime_ns):
        return True
    if sha256 is None:
        return False
    return None if prev.sha256 is None else prev.sha256 != sha256


def _hash_all(paths: Sequence[str], workers: int, progress: bool) -> list[Optional[str]]:
    """SHA-256 of each file (None when unreadable), hashed by ``workers`` threads."""
    from tqdm import tqdm

    def digest(path: str) -> Optional[str]:
        try:
            return file_sha256(path)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(tqdm(pool.map(digest, paths), total=len(paths), desc="verify", unit="file", disable=not progress))


class _Update:
    """One update of a cache from a corpus listing: the verdict of every recording, reusing what is unchanged.

    Each verdict has three stages, each reused when its inputs are unchanged: the probe (duration,
    bounds; depends on the audio), the text check (depends on the transcript and the text setting)
    and the features (depend on the audio; the feature file must also be intact).

    Args:
        cache: the cache to update.
        reader: the corpus reader (``probe`` for new and changed recordings).
        previous: the last index.
        phonemes: text setting of the pronounceability check.
        verify: hash every audio file and re-read every feature file.
    """

    def __init__(self, cache: FeatureCache, reader: CorpusReader, previous: PreviousIndex, phonemes: bool,
                 verify: bool) -> None:
        self.cache, self.reader, self.previous, self.verify = cache, reader, previous, verify
        self.feature_dir = str(cache.directory)  # joined as strings: the check runs once per recording
        self.text = TextProcessor(phonemes=phonemes)
        self.same_text_setting = previous.phonemes == phonemes
        self.changes = CorpusChanges(previous=previous.missing)
        self.records: dict[tuple[str, str], Record] = {}
        self.to_check: list[Record] = []  # usable records whose feature file must be read (and maybe extracted)
        self.unchanged: set[tuple[str, str]] = set()  # keys of usable recordings whose audio did not change

    def decide(self, workers: int, progress: bool) -> SkipReport:
        """List the corpus, stat (and under ``verify`` hash) every audio file, and decide every recording.

        Returns:
            The listing's skip report (with duplicate ids).

        Raises:
            DataError: no listed recording has usable audio.
        """
        listed, report = self.reader.listing()
        stats = [file_stat(c.path) for c in listed]
        hashes = _hash_all([c.path for c in listed], workers, progress) if self.verify else [None] * len(listed)
        for cand, (size, mtime_ns), digest in zip(listed, stats, hashes):
            self.add(cand, size, mtime_ns, digest, report)
        if all(r.reason in PROBE_REASONS for r in self.records.values()):
            raise DataError(f"no usable utterances in {self.reader.name} corpus at {self.reader.root} (skipped "
                            f"{_final_report(report, list(self.records.values())).describe()})")
        return report

    def add(self, cand: Candidate, size: int, mtime_ns: int, sha256: Optional[str], report: SkipReport) -> None:
        """Decide one listed recording (audio stat'ed, and hashed under ``verify``)."""
        key = cand.key
        if key in self.records:
            report.add("duplicate utterance id", cand.path)
            return
        prev = self.previous.records.get(key)
        rec = Record(cand.utterance_id, cand.speaker, cand.path, cand.text, cand.duration, size, mtime_ns, sha256)
        self.records[key] = rec
        changed = None if prev is None else audio_changed(prev, cand.path, size, mtime_ns, sha256)
        if prev is None:
            self.changes.new += 1
        elif changed or prev.text != cand.text:
            self.changes.changed += 1
        same = prev if changed is False else None  # the record of the same audio, if any
        if self._probe(rec, cand, same) and self._text(rec, prev):
            self._features(rec, same)

    def _probe(self, rec: Record, cand: Candidate, same: Optional[Record]) -> bool:
        """Duration and bounds (the previous answer when the audio is the same); False when skipped."""
        if same is not None:
            rec.duration, rec.sha256 = same.duration, same.sha256
            if same.reason in PROBE_REASONS:
                rec.skip(same.reason, same.detail)
        else:
            rec.duration, reason = self.reader.probe(cand)
            if reason is not None:
                rec.skip(reason)
        return rec.reason is None

    def _text(self, rec: Record, prev: Optional[Record]) -> bool:
        """Pronounceability (the previous answer when text and setting are the same); False when skipped."""
        if (prev is not None and prev.text == rec.text and self.same_text_setting
                and prev.reason not in PROBE_REASONS):
            pronounceable = prev.reason != UNPRONOUNCEABLE
        else:
            pronounceable = self._pronounceable(rec.text)
        if not pronounceable:
            rec.skip(UNPRONOUNCEABLE)
        return pronounceable

    def _features(self, rec: Record, same: Optional[Record]) -> None:
        """Keep the feature file of the same audio when its stat is as recorded; otherwise queue it for a check."""
        if same is not None and same.reason == UNDECODABLE:
            rec.skip(UNDECODABLE, same.detail)
            return
        if same is not None and same.reason is None:
            self.unchanged.add((rec.speaker, rec.utterance_id))
            recorded = (same.feature_size, same.feature_mtime_ns)
            path = f"{self.feature_dir}{os.sep}{rec.speaker}{os.sep}{rec.utterance_id}.pt"
            if not self.verify and file_stat(path) == recorded:
                rec.feature_size, rec.feature_mtime_ns = recorded
                return
        self.to_check.append(rec)

    def _pronounceable(self, text: str) -> bool:
        """Whether the text yields symbols the model can say."""
        try:
            self.text.encode(text)
        except TextError:
            return False
        return True

    def check_features(self, workers: int, progress: bool) -> None:
        """Reuse the intact feature files of the queued records, extract the others, record their stat."""
        extract = []
        for rec in self.to_check:
            source = self.cache.intact_source(rec.utterance())
            if source is None:
                extract.append(rec)
            else:
                rec.sha256 = source["sha256"]
                rec.feature_size, rec.feature_mtime_ns = file_stat(self.cache.path(rec))
        results = self.cache.extract([r.utterance() for r in extract], workers=workers, progress=progress)
        for rec, (digest, error) in zip(extract, results):
            if error is not None:
                rec.skip(UNDECODABLE, f"{rec.path}: {error}")
                continue
            rec.sha256 = digest
            rec.feature_size, rec.feature_mtime_ns = file_stat(self.cache.path(rec))
            self.changes.extracted += 1
            self.changes.rebuilt += (rec.speaker, rec.utterance_id) in self.unchanged

    def finish(self) -> None:
        """Count what left the index and delete the feature files that are no longer usable."""
        self.changes.checked = len(self.records)
        self.changes.removed = sum(1 for key in self.previous.records if key not in self.records)
        for key, prev in self.previous.records.items():
            rec = self.records.get(key)
            if prev.reason is None and (rec is None or rec.reason is not None):
                self.cache.path(prev).unlink(missing_ok=True)


def update(data_cfg: Mapping[str, Any], params: FeatureParams, phonemes: bool = True, progress: bool = True,
           verify: bool = False, write: bool = False) -> tuple[FeatureCache, CorpusIndex]:
    """Bring the cache in step with the corpus on disk, and return it with the index of usable utterances.

    Args:
        data_cfg: the ``data`` config section.
        params: feature parameters.
        phonemes: CMUdict phonemes (else letters) for the pronounceability check.
        progress: progress bars.
        verify: hash every audio file and re-read every feature file (catches changes that keep size and mtime).
        write: rewrite ``index.json`` and ``report.json`` even when nothing changed.

    Returns:
        The cache and the index; ``index.changes`` says what changed since the last index.

    Raises:
        ConfigError: unknown corpus name.
        DataError: missing root, or no usable utterance.
    """
    ensure_corpus(data_cfg, progress=progress)
    reader = build_reader(data_cfg)
    cache = FeatureCache.for_config(data_cfg, params)
    workers = data_cfg["preprocess_workers"]
    with _gc_paused():
        previous = read_previous(cache)
        state = _Update(cache, reader, previous, phonemes, verify)
        listing = state.decide(workers, progress)
    state.check_features(workers, progress)
    with _gc_paused():
        state.finish()
        records = list(state.records.values())
        report = _final_report(listing, records)
        utterances = sorted((r.utterance() for r in records if r.reason is None),
                            key=lambda u: (u.speaker, u.utterance_id))
    if not utterances:
        raise DataError(f"no utterance of {reader.root} could be decoded (skipped {report.describe()})")
    speakers = reader.speaker_info()
    index = CorpusIndex(reader.name, str(reader.root), utterances, speakers, report, state.changes)
    if write or state.changes.any or state.to_check or not state.same_text_setting or speakers != previous.speakers:
        write_json(cache.directory / "report.json", report.to_dict())
        _write_index(cache, index, records, params, phonemes)
    return cache, index


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building per-recording objects (none of them cyclic): at
    corpus scale its full passes over them would otherwise be a large share of the re-check."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _final_report(listing: SkipReport, records: Sequence[Record]) -> SkipReport:
    """The listing's skips plus every record's verdict."""
    report = SkipReport()
    report.merge(listing)
    for rec in records:
        if rec.reason is not None:
            report.add(rec.reason, rec.detail)
    return report


def _write_index(cache: FeatureCache, index: CorpusIndex, records: Sequence[Record], params: FeatureParams,
                 phonemes: bool) -> None:
    """Write ``index.json`` atomically, one recording per line (compact: it is read on every run)."""
    head = {"version": INDEX_VERSION, "corpus": index.name, "root": index.root, "features": params.to_dict(),
            "phonemes": phonemes, "speakers": index.speakers, "columns": list(RECORD_COLUMNS)}
    rows = ",\n".join(json.dumps(r.row(), ensure_ascii=False) for r in records)
    opening = json.dumps(head, ensure_ascii=False)[:-1]  # without its closing brace: the recordings follow
    cache.directory.mkdir(parents=True, exist_ok=True)
    write_text(cache.index_path, f'{opening}, "recordings": [\n{rows}\n]}}\n')


def preprocess(data_cfg: Mapping[str, Any], params: FeatureParams, phonemes: bool = True, progress: bool = True,
               verify: bool = False) -> tuple[FeatureCache, CorpusIndex]:
    """Update the cache from the corpus and (re)write the index and the skip report (the ``preprocess`` command).

    Args:
        verify: also hash every audio file and re-read every feature file (slow: reads the whole corpus).

    Returns:
        The cache and the index of utterances that have features; ``index.changes`` says what changed.

    Raises:
        DataError: missing root, unknown corpus, or no usable utterance.
    """
    return update(data_cfg, params, phonemes=phonemes, progress=progress, verify=verify, write=True)


def load_index(cache: FeatureCache) -> Optional[CorpusIndex]:
    """The usable utterances of the cache's last index as it stands (not re-checked), or None if there is none."""
    previous = read_previous(cache)
    if previous.missing:
        return None
    utterances = [r.utterance() for r in previous.records.values() if r.reason is None]
    utterances.sort(key=lambda u: (u.speaker, u.utterance_id))
    return CorpusIndex(previous.corpus, previous.root, utterances, previous.speakers, SkipReport())


def prepare(data_cfg: Mapping[str, Any], params: FeatureParams, phonemes: bool = True,
            progress: bool = True) -> tuple[FeatureCache, CorpusIndex]:
    """The cache and index, brought in step with the corpus first (every run); logs one line of what changed."""
    cache, index = update(data_cfg, params, phonemes=phonemes, progress=progress)
    assert index.changes is not None
    log.info(index.changes.describe())
    if index.changes.any:
        log.info(index.summary())
    return cache, index
