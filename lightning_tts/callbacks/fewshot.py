"""Few-shot evaluation during training: adapt to fixed validation speakers, synthesise, score."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

from lightning_tts.audio import FeatureExtractor, read_audio, write_audio
from lightning_tts.evaluation.judges import RESEMBLYZER, Embedder, build_judge
from lightning_tts.evaluation.recognizer import Transcriber, transcriber
from lightning_tts.evaluation.scoring import metric_names, score_pair, similarity_to
from lightning_tts.evaluation.speaker_sets import fixed_speaker_sets, support_batch
from lightning_tts.metrics import ScoreMean
from lightning_tts.models.vocoder import VocoderConfig, build_vocoder
from lightning_tts.plots import mel_alignment_figure, save_figure


@dataclass
class FewShotConfig:
    """Options of ``FewShotEvalCallback`` (the ``fewshot`` section; ``every: 0`` turns it off).

    Attributes:
        every: run after every N-th validation.
        speakers: validation speakers used (bounds the cost).
        queries: query utterances per speaker.
        shots: K support utterances.
        steps: adaptation steps.
        speaker_encoder: the judge of speaker similarity (``speaker_sim``), here and in ``evaluate``:
            ``resemblyzer`` (its pretrained GE2E encoder), an evaluation encoder checkpoint (a metric
            run trained apart from the models under test), or ``none``/null (no ``speaker_sim``).
        wer: transcribe every synthesis with the offline recogniser and report ``wer``/``cer``
            against its text (here and in ``evaluate``).
        workers: processes that share the speakers of ``evaluate`` and of an experiment's tuning and
            evaluation stages (``evaluation.parallel``; 0: one per CPU core; 1: this process). Each
            worker runs one torch thread, so its numbers are the same for any number of workers. This
            callback, which runs inside training, does not use it.
    """

    every: int = 1
    speakers: int = 2
    queries: int = 2
    shots: int = 5
    steps: int = 10
    speaker_encoder: Optional[str] = RESEMBLYZER
    wer: bool = True
    workers: int = 1


class FewShotEvalCallback(pl.Callback):
    """Every ``every`` validations: each learner adapts its own way (K shots, S steps) to fixed
    validation speakers, synthesises their fixed query texts, scores them with the same
    ``score_pair`` as ``evaluate``, and logs ``val/fewshot/<metric>`` for every metric it reports
    (``speaker_sim`` with a judge, ``wer``/``cer`` with the recogniser). Speakers are
    split across ranks and the means are all-reduced. Rank 0 writes the first speaker's first query as a wav and a mel image under
    ``directory``, and sends it to the trainer's loggers that take audio (TensorBoard, W&B) as
    ``fewshot/<speaker>/synthesis``, beside the ``recording`` and its vocoder ``ceiling``.

    Args:
        directory: where samples go.
        config: when and how much (``FewShotConfig``).
        vocoder: which vocoder makes the audio (the run's ``vocoder`` section).
        seed: the split seed (same fixed sets as ``evaluate`` uses for a split).
    """

    def __init__(self, directory: str | Path, config: FewShotConfig, vocoder: VocoderConfig, seed: int = 0) -> None:
        super().__init__()
        self.directory, self.config, self.vocoder, self.seed = Path(directory), config, vocoder, seed
        self._validations = 0
        self._embed: Optional[Embedder] = None
        self._references: dict[str, torch.Tensor] = {}  # utterance id -> the judge's (D,) embedding of the recording
        self._transcribe: Optional[Transcriber] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Load the judge and the recogniser once (a bad judge fails before training starts); a
        learner that cannot synthesise (a speaker-encoder run) needs neither."""
        if self.config.every <= 0 or not pl_module.synthesizes:
            return
        if self._embed is None:
            self._embed = build_judge(self.config.speaker_encoder, pl_module.feature_params.sample_rate)
        if self.config.wer and self._transcribe is None:
            self._transcribe = transcriber(pl_module.feature_params.sample_rate)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        c = self.config
        if trainer.sanity_checking or c.every <= 0 or not pl_module.synthesizes:
            return
        self._validations += 1
        dm = trainer.datamodule
        if self._validations % c.every or dm is None or not dm.split.val:
            return
        sets = fixed_speaker_sets(dm.index.utterances, dm.split.val, c.shots, c.queries, self.seed)[: c.speakers]
        sr = pl_module.feature_params.sample_rate
        means = {name: ScoreMean() for name in metric_names(self._embed is not None, self._transcribe is not None)}
        extractor = FeatureExtractor(pl_module.feature_params)
        vocoder = build_vocoder(self.vocoder, pl_module.feature_params)
        sample = None
        for speaker_set in sets[trainer.global_rank:: trainer.world_size]:
            waves = [read_audio(u.path, sr) for u in speaker_set.support]
            support = support_batch(speaker_set.support, waves, pl_module.text, extractor).to(pl_module.device)
            state = pl_module.adapt(support, steps=c.steps)
            for utt in speaker_set.query:
                mel = pl_module.synthesize(torch.tensor(pl_module.text.encode(utt.text)), state).cpu()  # (T, n_mels)
                wav, ref = vocoder(mel), read_audio(utt.path, sr)
                similarity = (similarity_to(self._reference(utt.utterance_id, ref), self._embed)
                              if self._embed is not None else None)
                for name, value in score_pair(ref, wav, sr, similarity, utt.text, self._transcribe).items():
                    means[name].update([value])
                sample = sample or (speaker_set.speaker, utt, mel, wav, extractor(ref)["mel"])
        for name, mean in means.items():
            value = mean.compute()  # all-reduces the sums: every rank must get here
            pl_module.log(f"val/fewshot/{name}", value.float().to(pl_module.device), sync_dist=False)
        if trainer.is_global_zero and sample is not None:
            speaker, utt, mel, wav, target = sample
            stem = self.directory / f"step{trainer.global_step:07d}_{speaker}_{utt.utterance_id}"
            self.directory.mkdir(parents=True, exist_ok=True)
            write_audio(stem.with_suffix(".wav"), wav, sr)
            save_figure(mel_alignment_figure(mel, target, title=f"few-shot {speaker} (K={c.shots}, "
                                                                 f"{c.steps} steps): {utt.text}"),
                        stem.with_suffix(".png"))
            if audio_loggers(trainer):
                clips = {"synthesis": wav, "recording": read_audio(utt.path, sr), "ceiling": vocoder(target)}
                self._log_audio(trainer, speaker, clips, sr)

    def _reference(self, utterance_id: str, ref: torch.Tensor) -> torch.Tensor:
        """The judge's (D,) embedding of a (N,) recording, computed once per utterance."""
        if utterance_id not in self._references:
            assert self._embed is not None
            self._references[utterance_id] = self._embed(ref)
        return self._references[utterance_id]

    @staticmethod
    def _log_audio(trainer: pl.Trainer, speaker: str, clips: dict[str, torch.Tensor], sample_rate: int) -> None:
        """Send each (samples,) clip to the trainer's loggers that take audio as ``fewshot/<speaker>/<name>``."""
        for name, clip in clips.items():
            wav, tag = clip.detach().float().cpu().clamp(-1.0, 1.0), f"fewshot/{speaker}/{name}"
            for logger in audio_loggers(trainer):
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_audio(tag, wav[None], trainer.global_step, sample_rate)
                else:
                    logger.log_audio(tag, [wav.numpy()], step=trainer.global_step, sample_rate=[sample_rate])


def audio_loggers(trainer: pl.Trainer) -> list[Logger]:
    """The trainer's loggers that take audio: TensorBoard and Weights & Biases."""
    return [logger for logger in trainer.loggers if isinstance(logger, (TensorBoardLogger, WandbLogger))]
