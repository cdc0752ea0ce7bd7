"""Few-shot evaluation during training: adapt to fixed validation speakers, synthesise, score."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch

from lightning_tts.audio import FeatureExtractor, read_audio, write_audio
from lightning_tts.evaluation import Embedder, fixed_speaker_sets, speaker_embedder, support_batch
from lightning_tts.metrics import PESQ, STOI, MelCepstralDistortion, SpeakerSimilarity
from lightning_tts.models.vocoder import GriffinLimVocoder
from lightning_tts.plots import mel_alignment_figure, save_figure


class FewShotEvalCallback(pl.Callback):
    """Every ``every`` validations: each learner adapts its own way (K shots, S steps) to fixed
    validation speakers, synthesises their fixed query texts, and logs ``val/fewshot/{mcd,pesq,stoi}``
    and, with an evaluation encoder, ``val/fewshot/speaker_sim`` (torchmetrics, summed over ranks;
    speakers are split across ranks). Rank 0 writes the first
    speaker's first query as a wav and a mel image under ``directory``.

    Args:
        directory: where samples go.
        every: run after every N-th validation (0 disables).
        speakers: validation speakers used (bounds the cost).
        queries: query utterances per speaker.
        shots: K support utterances.
        steps: adaptation steps.
        seed: the split seed (same fixed sets as ``evaluate`` uses for a split).
        griffin_lim_iters: vocoder iterations.
        speaker_encoder: an evaluation encoder checkpoint (a metric run) for speaker similarity.
    """

    def __init__(self, directory: str | Path, every: int = 1, speakers: int = 2, queries: int = 2, shots: int = 5,
                 steps: int = 10, seed: int = 0, griffin_lim_iters: int = 16,
                 speaker_encoder: Optional[str] = None) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.every, self.speakers, self.queries, self.shots, self.steps = every, speakers, queries, shots, steps
        self.seed, self.iters, self.speaker_encoder = seed, griffin_lim_iters, speaker_encoder
        self._validations = 0
        self._embed: Optional[Embedder] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Load the evaluation encoder once (a bad path fails before training starts)."""
        if self.speaker_encoder and self.every > 0 and self._embed is None:
            self._embed = speaker_embedder(self.speaker_encoder, pl_module.feature_params.sample_rate)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.every <= 0 or not pl_module.synthesizes:
            return
        self._validations += 1
        dm = trainer.datamodule
        if self._validations % self.every or dm is None or not dm.split.val:
            return
        sets = fixed_speaker_sets(dm.index.utterances, dm.split.val, self.shots, self.queries, self.seed)[: self.speakers]
        sr = pl_module.feature_params.sample_rate
        metrics = {"mcd": MelCepstralDistortion(sr), "pesq": PESQ(sr), "stoi": STOI(sr)}
        if self._embed is not None:
            metrics["speaker_sim"] = SpeakerSimilarity(sr, self._embed)
        extractor = FeatureExtractor(pl_module.feature_params)
        vocoder = GriffinLimVocoder(pl_module.feature_params, self.iters)
        sample = None
        for speaker_set in sets[trainer.global_rank:: trainer.world_size]:
            waves = [read_audio(u.path, sr) for u in speaker_set.support]
            support = support_batch(speaker_set.support, waves, pl_module, extractor).to(pl_module.device)
            state = pl_module.adapt(support, steps=self.steps)
            for utt in speaker_set.query:
                mel = pl_module.synthesize(torch.tensor(pl_module.text.encode(utt.text)), state).cpu()
                wav, ref = vocoder(mel), read_audio(utt.path, sr)
                for metric in metrics.values():
                    metric.update([ref], [wav])
                sample = sample or (speaker_set.speaker, utt, mel, wav, extractor(ref)["mel"])
        for name, metric in metrics.items():
            value = metric.compute()  # all-reduces the sums: every rank must get here
            pl_module.log(f"val/fewshot/{name}", value.float().to(pl_module.device), sync_dist=False)
        if trainer.is_global_zero and sample is not None:
            speaker, utt, mel, wav, target = sample
            stem = self.directory / f"step{trainer.global_step:07d}_{speaker}_{utt.utterance_id}"
            self.directory.mkdir(parents=True, exist_ok=True)
            write_audio(stem.with_suffix(".wav"), wav, sr)
            save_figure(mel_alignment_figure(mel, target, title=f"few-shot {speaker} (K={self.shots}, "
                                                                 f"{self.steps} steps): {utt.text}"),
                        stem.with_suffix(".png"))
