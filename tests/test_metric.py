"""Metric learning learns: the encoder separates unseen speakers, its geometry follows the true voice
parameters, a zero-shot voice from reference audio sounds like its speaker (trainings of minutes, marked
``slow``); ``embed``, the notebook, ``adapt`` for this learner, and speaker similarity in ``evaluate``, on
briefly trained learners."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TEST_SEED, execute_notebook
from lightning_tts.audio import read_audio
from lightning_tts.cli import main
from lightning_tts.config import load_config
from lightning_tts.embeddings import EmbeddingSet, embed_dataset, split_utterances
from lightning_tts.evaluation.judges import speaker_embedder
from lightning_tts.learners import build_learner
from lightning_tts.metrics import verification_scores
from lightning_tts.data.datamodule import build_datamodule
from lightning_tts.data.plans import SpeakerBatches
from lightning_tts.training import run

ENCODER_STEPS, TTS_STEPS = 500, 400


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    from lightning_tts.data.synthetic import build_synthetic_corpus

    tmp = tmp_path_factory.mktemp("metric")
    corpus = build_synthetic_corpus(tmp / "corpus", speakers=24, utterances=12, seed=11, workers=2, progress=False)
    common = [f"data.root={corpus}", f"data.cache_dir={tmp / 'cache'}", f"trainer.default_root_dir={tmp / 'runs'}",
              "data.splits.val=3", "data.splits.test=3", "data.preprocess_workers=1", "data.speakers_per_batch=5",
              "trainer.enable_progress_bar=false", "fewshot.every=0", "projection.method=pca",
              "trainer.limit_val_batches=null", f"seed={TEST_SEED}"]
    return tmp, corpus, common


#: Steps of the briefly trained encoder and TTS model that the plumbing tests use.
BRIEF_STEPS = 4


def fit_encoder(setup, steps: int):
    """The dedicated evaluation encoder, GE2E alone, trained ``steps`` steps: (config, run result)."""
    _, _, common = setup
    cfg = load_config(["conf/learner/speaker_encoder.yaml"], [*common, f"trainer.max_steps={steps}",
                                                            f"trainer.val_check_interval={steps}"])
    return cfg, run(cfg, "fit", progress=False)


def fit_tts(setup, steps: int):
    """Metric learning (GE2E) + zero-shot TTS conditioned on the embedding, trained ``steps`` steps."""
    _, _, common = setup
    cfg = load_config(["conf/learner/metric.yaml"], [*common, f"trainer.max_steps={steps}",
                                                     f"trainer.val_check_interval={steps}", "loss.bin_start=150",
                                                     "loss.bin_warmup=150", "learner.encoder.channels=128"])
    return cfg, run(cfg, "fit", progress=False)


@pytest.fixture(scope="module")
def encoder_trained(setup):
    """The encoder trained long enough to separate voices (minutes on 2 cores: slow tests only)."""
    return fit_encoder(setup, ENCODER_STEPS)


@pytest.fixture(scope="module")
def tts_trained(setup):
    """The TTS model trained long enough to speak in a referenced voice (minutes: slow tests only)."""
    return fit_tts(setup, TTS_STEPS)


@pytest.fixture(scope="module")
def encoder_run(setup):
    """The encoder after a few steps: for the commands, which test plumbing, not learning."""
    return fit_encoder(setup, BRIEF_STEPS)


@pytest.fixture(scope="module")
def tts_run(setup):
    """The TTS model after a few steps: for the commands, which test plumbing, not learning."""
    return fit_tts(setup, BRIEF_STEPS)


def unseen_embeddings(cfg, learner) -> EmbeddingSet:
    dm = build_datamodule(cfg, SpeakerBatches(), progress=False)
    indices = split_utterances(dm, "val", 12) + split_utterances(dm, "test", 12)
    return embed_dataset(learner, dm, indices)


@pytest.mark.slow
def test_encoder_separates_unseen_speakers(encoder_trained) -> None:
    cfg, result = encoder_trained
    dm = build_datamodule(cfg, SpeakerBatches(), progress=False)
    torch.manual_seed(0)
    untrained = build_learner(cfg, speakers=dm.split.train, symbols=dm.text.symbols).eval()
    trained = unseen_embeddings(cfg, result.learner.eval())
    before = unseen_embeddings(cfg, untrained)
    eer_before, sil_before = verification_scores(before.vectors, np.asarray(before.speakers))
    eer_after, sil_after = verification_scores(trained.vectors, np.asarray(trained.speakers))
    print(f"6 unseen speakers x 12 utterances: EER untrained {eer_before:.3f} -> trained {eer_after:.3f}; "
          f"silhouette {sil_before:.3f} -> {sil_after:.3f}")
    # seeds 1234, 1, 2, 3 (LIGHTNING_TTS_TEST_SEED): EER 0.364 -> 0.109, 0.084, 0.085, 0.132; silhouette
    # 0.054 -> 0.602, 0.629, 0.592, 0.552. The bounds sit below the worst seed with a margin.
    assert eer_after < 0.5 * eer_before and eer_after < 0.18
    assert sil_after > sil_before + 0.3
    assert result.metrics["val/eer"] < 0.2 and "val/silhouette" in result.metrics
    assert any((result.run_dir / "embeddings").glob("step*.png"))


@pytest.mark.slow
def test_centroid_distances_follow_true_voice_parameters(setup, encoder_trained) -> None:
    """Unseen speakers' centroids are placed by what the encoder learned about voices: their distances
    follow the distance in (log F0, vocal-tract scale). Training speakers are pushed apart by the
    loss itself, so their geometry says less (printed, not asserted)."""
    _, corpus, _ = setup
    cfg, result = encoder_trained
    dm = build_datamodule(cfg, SpeakerBatches(), progress=False)
    params = {p["speaker"]: p for p in json.loads((corpus / "speaker-params.json").read_text())["speakers"]}
    found = {}
    for group, splits in (("unseen", ("val", "test")), ("all", ("train", "val", "test"))):
        indices = [i for split in splits for i in split_utterances(dm, split, 12)]
        names, centroids = embed_dataset(result.learner.eval(), dm, indices).centroids()
        voice = np.array([[np.log(params[n]["f0_mean"]), params[n]["vtl_scale"]] for n in names])
        voice = (voice - voice.mean(0)) / voice.std(0)
        i, j = np.triu_indices(len(names), k=1)
        embedding_distance = 1 - np.sum(centroids[i] * centroids[j], axis=1)
        voice_distance = np.linalg.norm(voice[i] - voice[j], axis=1)
        found[group] = (len(names), len(i), float(np.corrcoef(embedding_distance, voice_distance)[0, 1]))
    for group, (n, pairs, r) in found.items():
        print(f"{group}: {n} speakers, {pairs} pairs: Pearson r(centroid cosine distance, (log F0, VTL) distance) = {r:.3f}")
    assert found["unseen"][2] > 0.35  # seeds 1234, 1, 2, 3: r = 0.675, 0.608, 0.726, 0.566


@pytest.mark.slow
def test_zero_shot_voice_from_reference_audio(setup, encoder_trained, tts_trained, tmp_path: Path) -> None:
    """``synthesize --reference`` for each unseen speaker: is the output closest to that speaker
    (judged by the separately trained evaluation encoder)?"""
    _, _, _ = setup
    cfg, result = tts_trained
    _, encoder_result = encoder_trained
    checkpoint = str(result.last_checkpoint)
    dm = build_datamodule(cfg, SpeakerBatches(), progress=False)
    unseen = dm.split.val + dm.split.test
    embed = speaker_embedder(encoder_result.last_checkpoint, 16000)
    by_speaker = {s: [u for u in dm.index.utterances if u.speaker == s] for s in unseen}
    centroids = torch.stack([torch.nn.functional.normalize(torch.stack(
        [embed(read_audio(u.path, 16000)) for u in by_speaker[s][3:]]).mean(0), dim=0) for s in unseen])
    outputs = []
    for speaker in unseen:
        refs = [str(u.path) for u in by_speaker[speaker][:3]]
        out = tmp_path / f"{speaker}.wav"
        assert main(["synthesize", "--checkpoint", checkpoint, "--reference", *refs, "--out", str(out),
                     "--text", by_speaker[speaker][5].text, "--no-progress"]) == 0
        outputs.append(embed(read_audio(out, 16000)))
    sims = torch.stack(outputs) @ centroids.T  # (output of speaker i, centroid of speaker j)
    n = len(unseen)
    own, other = float(sims.diagonal().mean()), float((sims.sum() - sims.diagonal().sum()) / (n * n - n))
    hits = int((sims.argmax(dim=1) == torch.arange(n)).sum())
    # which output is closest to each speaker's centroid (cancels a bias of all outputs toward one voice)
    hits_by_centroid = int((sims.argmax(dim=0) == torch.arange(n)).sum())
    print(f"zero-shot from 3 references, {n} unseen speakers: mean cosine to own speaker {own:.3f}, to others "
          f"{other:.3f}; own speaker nearest for {hits}/{n} outputs; own output nearest for {hits_by_centroid}/{n} "
          f"speakers\n{np.round(sims.numpy(), 3)}")
    # seeds 1234, 1, 2, 3: own - other = 0.364, 0.447, 0.457, 0.425; own output nearest for 3, 3, 3, 4 of 6
    # speakers (chance: 1). One seed's 3 of 6 was asserted before; the margins now hold over the four seeds.
    assert own > other + 0.2
    assert hits_by_centroid >= 2


def test_adapt_stores_the_embedding_and_synthesizes(setup, tts_run, tmp_path: Path, capsys) -> None:
    cfg, result = tts_run
    dm = build_datamodule(cfg, SpeakerBatches(), progress=False)
    speaker = dm.split.test[0]
    support = tmp_path / "support"
    support.mkdir()
    for u in [u for u in dm.index.utterances if u.speaker == speaker][:3]:
        (support / Path(u.path).name).write_bytes(Path(u.path).read_bytes())
        (support / Path(u.path).with_suffix(".txt").name).write_text(u.text)
    voice = tmp_path / "voice.pt"
    assert main(["adapt", "--checkpoint", str(result.last_checkpoint), "--support", str(support), "--out", str(voice),
                 "--no-progress"]) == 0
    state = torch.load(voice, weights_only=True)["state"]
    assert state["extras"]["embedding"].shape == (128,)
    assert float(state["extras"]["embedding"].norm()) == pytest.approx(1.0, abs=1e-4)
    out = tmp_path / "out.wav"
    assert main(["synthesize", "--checkpoint", str(result.last_checkpoint), "--adapted", str(voice),
                 "--text", "Please call Stella.", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    # a speaker-encoder-only checkpoint refuses to synthesise, in one line
    capsys.readouterr()


def test_encoder_only_checkpoint_refuses_to_synthesize(encoder_run, setup, tmp_path: Path, capsys) -> None:
    _, corpus, _ = setup
    _, result = encoder_run
    ref = str(next(corpus.rglob("*.flac")))
    assert main(["synthesize", "--checkpoint", str(result.last_checkpoint), "--reference", ref, "--text", "Hello.",
                 "--out", str(tmp_path / "x.wav")]) == 1
    assert "speaker encoder only" in capsys.readouterr().err
    assert main(["synthesize", "--checkpoint", str(result.last_checkpoint), "--reference", str(tmp_path / "no.wav"),
                 "--text", "Hello.", "--out", str(tmp_path / "x.wav")]) == 1
    assert "reference audio not found" in capsys.readouterr().err


def test_embed_command_and_notebook(setup, encoder_run, tmp_path: Path) -> None:
    _, _, common = setup
    _, result = encoder_run
    out = tmp_path / "embed"
    overrides = [c for c in common if c.startswith(("data.", "trainer.default"))]
    assert main(["embed", "--checkpoint", str(result.last_checkpoint), "--out", str(out), "--split", "test",
                 "--no-progress", *overrides]) == 0
    assert (out / "umap.png").stat().st_size > 10_000
    emb = EmbeddingSet.load(out / "embeddings.npz")
    assert emb.vectors.shape == (3 * 12, 128) and len(set(emb.speakers)) == 3 and len(emb.utterance_ids) == 36
    assert main(["embed", "--checkpoint", str(result.last_checkpoint), "--out", str(out), "--method", "mds",
                 *overrides]) == 2
    outputs = execute_notebook("embedding_plots.ipynb", {"LIGHTNING_TTS_EMBEDDINGS": str(out / "embeddings.npz")})
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    assert any("EER" in o.get("text", "") for o in outputs)


def test_evaluate_reports_speaker_similarity(setup, encoder_run, tts_run, tmp_path: Path, capsys) -> None:
    _, _, common = setup
    _, encoder = encoder_run
    _, tts = tts_run
    overrides = [c for c in common if c.startswith(("data.", "trainer.default"))]
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(tts.last_checkpoint), "--shots", "2", "--steps", "0", "--out", str(out),
                 "--no-progress", f"fewshot.speaker_encoder={encoder.last_checkpoint}", *overrides]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["system"]: r["metrics"]["speaker_sim"] for r in results["rows"]}
    assert rows["ground truth"]["mean"] == pytest.approx(1.0, abs=1e-5)
    metric_row = next(v for k, v in rows.items() if k.startswith("metric"))
    assert metric_row["n"] == 3 * 5 and 0 < metric_row["mean"] < 1
    assert "## speaker_sim (higher is better)" in (out / "results.md").read_text()
    assert main(["evaluate", "--checkpoint", str(encoder.last_checkpoint), "--shots", "2", "--steps", "0",
                 "--out", str(out), f"fewshot.speaker_encoder={encoder.last_checkpoint}", *overrides]) == 1
    assert "graded by its own encoder" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tts.last_checkpoint), "--shots", "2", "--steps", "0",
                 "--out", str(out), f"fewshot.speaker_encoder={tts.last_checkpoint}x", *overrides]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
