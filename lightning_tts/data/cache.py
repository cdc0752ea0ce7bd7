"""Feature cache and the ``preprocess`` pipeline: corpus -> index -> cached log-mels.

Layout (one directory per corpus reading and per feature parameter set, so nothing ever mixes)::

    <cache_dir>/<corpus>-<corpus_key>/features-<feature_key>/
        <speaker>/<utterance_id>.pt   # {"mel": (frames, n_mels) fp16, "pitch"?: (frames,), "energy"?: (frames,)}
        index.json                    # usable utterances + speaker info + feature params (written last)
        report.json                   # what was skipped and why

Every file is written to a temporary name and renamed, so a file that exists is complete: an
interrupted ``preprocess`` resumes by computing only what is missing. Features are loaded lazily, one
file per utterance, with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from lightning_tts.atomic import atomic_path, write_json
from lightning_tts.audio import FeatureExtractor, FeatureParams, read_audio
from lightning_tts.data.corpora import CorpusIndex, SkipReport, Utterance, build_reader, reader_key
from lightning_tts.data.synthetic import build_synthetic_corpus
from lightning_tts.errors import AudioError, ConfigError, DataError, TextError
from lightning_tts.text import TextProcessor

log = logging.getLogger(__name__)
INDEX_VERSION = 1


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
        "mic": data_cfg["mic"] if corpus in ("vctk", "synthetic") else None,
        "subsets": list(data_cfg["subsets"]) if corpus == "libritts" else None,
        "min_duration": data_cfg["min_duration"],
        "max_duration": data_cfg["max_duration"],
    }
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]
    return f"{corpus}-{digest}"


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
        """Where the index of usable utterances is written, last of all."""
        return self.directory / "index.json"

    def path(self, utt: Utterance) -> Path:
        """Feature file of one utterance."""
        return self.directory / utt.speaker / f"{utt.utterance_id}.pt"

    def load(self, utt: Utterance) -> dict[str, torch.Tensor]:
        """Features of one utterance, float32.

        Raises:
            DataError: the file is missing or unreadable (cache deleted or from another version).
        """
        path = self.path(utt)
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as err:
            raise DataError(f"cannot read cached features {path}: {err}; re-run preprocess") from err
        return {k: v.float() for k, v in feats.items()}

    def build(self, utterances: list[Utterance], workers: int = 2, progress: bool = True) -> SkipReport:
        """Compute features for every utterance that has no cache file yet.

        Args:
            utterances: what to cache.
            workers: processes (1 = in this process).
            progress: show a progress bar.

        Returns:
            The utterances whose audio could not be decoded (they have no cache file).
        """
        from tqdm import tqdm

        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*/.*.tmp-*"):  # left by a killed run; never read as valid
            stale.unlink(missing_ok=True)
        todo = [u for u in utterances if not self.path(u).exists()]
        for speaker in {u.speaker for u in todo}:
            (self.directory / speaker).mkdir(exist_ok=True)
        report = SkipReport()
        bar = tqdm(total=len(utterances), initial=len(utterances) - len(todo), desc="features", unit="utt",
                   disable=not progress, smoothing=0.05)
        jobs = [(str(u.path), str(self.path(u))) for u in todo]
        chunk = max(1, min(64, len(jobs) // (8 * max(1, workers)) or 1))
        batches = [jobs[i: i + chunk] for i in range(0, len(jobs), chunk)]
        if workers > 1 and len(batches) > 1:
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(self.params,)) as pool:
                results = pool.map(_extract_batch, batches)
                for result in results:
                    self._collect(result, report, bar)
        else:
            _init_worker(self.params, threads=None)
            for batch in batches:
                self._collect(_extract_batch(batch), report, bar)
        bar.close()
        return report

    @staticmethod
    def _collect(result: list[tuple[str, Optional[str]]], report: SkipReport, bar: Any) -> None:
        """Record one worker batch's failures and advance the bar."""
        for audio_path, error in result:
            if error is not None:
                report.add("undecodable audio", f"{audio_path}: {error}")
        bar.update(len(result))


_EXTRACTOR: Optional[FeatureExtractor] = None


def _init_worker(params: FeatureParams, threads: Optional[int] = 1) -> None:
    """Per-process feature extractor (one torch thread per worker process)."""
    global _EXTRACTOR
    if threads is not None:
        torch.set_num_threads(threads)
    _EXTRACTOR = FeatureExtractor(params)


def _extract_batch(jobs: list[tuple[str, str]]) -> list[tuple[str, Optional[str]]]:
    """Compute and atomically save features for (audio path, cache path) pairs; errors returned, not raised."""
    assert _EXTRACTOR is not None
    out = []
    for audio_path, cache_path in jobs:
        try:
            wav = read_audio(audio_path, _EXTRACTOR.params.sample_rate)
            feats = _EXTRACTOR(wav)
        except AudioError as err:
            out.append((audio_path, str(err)))
            continue
        feats["mel"] = feats["mel"].half()
        with atomic_path(cache_path) as tmp:
            torch.save(feats, tmp)
        out.append((audio_path, None))
    return out


def ensure_corpus(data_cfg: Mapping[str, Any], progress: bool = True) -> None:
    """Build the synthetic corpus at ``data.root`` if it is the configured corpus and is missing.

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
    elif not root.exists():
        raise DataError(f"data.root does not exist: {root} (corpus {data_cfg['corpus']})")


def _drop_unpronounceable(utterances: list[Utterance], phonemes: bool, report: SkipReport) -> list[Utterance]:
    """Utterances whose text yields symbols; the others are counted as skipped."""
    processor = TextProcessor(phonemes=phonemes)
    kept = []
    for utt in utterances:
        try:
            processor.encode(utt.text)
        except TextError:
            report.add("unpronounceable text", utt.path)
            continue
        kept.append(utt)
    return kept


def preprocess(data_cfg: Mapping[str, Any], params: FeatureParams, phonemes: bool = True,
               progress: bool = True) -> tuple[FeatureCache, CorpusIndex]:
    """Read the corpus, cache its features, and write the index of usable utterances.

    Returns:
        The cache and the index of utterances that have features.

    Raises:
        DataError: missing root, unknown corpus, or no usable utterance.
    """
    ensure_corpus(data_cfg, progress=progress)
    index = build_reader(data_cfg).read()
    index.utterances = _drop_unpronounceable(index.utterances, phonemes, index.skipped)
    cache = FeatureCache.for_config(data_cfg, params)
    failed = cache.build(index.utterances, workers=data_cfg["preprocess_workers"], progress=progress)
    index.skipped.merge(failed)
    index.utterances = [u for u in index.utterances if cache.path(u).exists()]
    if not index.utterances:
        raise DataError(f"no utterance of {index.root} could be decoded (skipped {index.skipped.describe()})")
    write_json(cache.directory / "report.json", index.skipped.to_dict())
    write_json(cache.index_path, {
        "version": INDEX_VERSION,
        "corpus": index.name,
        "root": index.root,
        "features": params.to_dict(),
        "speakers": index.speakers,
        "utterances": [list(astuple(u)) for u in index.utterances],
    })
    return cache, index


def load_index(cache: FeatureCache) -> Optional[CorpusIndex]:
    """The index written by ``preprocess`` for this cache, or None if there is none yet."""
    if not cache.index_path.is_file():
        return None
    data = json.loads(cache.index_path.read_text())
    if data.get("version") != INDEX_VERSION:
        return None
    utterances = [Utterance(*row) for row in data["utterances"]]
    return CorpusIndex(data["corpus"], data["root"], utterances, data["speakers"], SkipReport())


def prepare(data_cfg: Mapping[str, Any], params: FeatureParams, phonemes: bool = True,
            progress: bool = True) -> tuple[FeatureCache, CorpusIndex]:
    """The cache and index, running ``preprocess`` only when no complete index exists yet."""
    cache = FeatureCache.for_config(data_cfg, params)
    index = load_index(cache)
    if index is None:
        cache, index = preprocess(data_cfg, params, phonemes=phonemes, progress=progress)
        log.info(index.summary())
    return cache, index
