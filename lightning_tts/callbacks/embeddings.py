"""Speaker maps during training: project held-out speakers' embeddings every N validations."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

from lightning_tts.embeddings import embed_dataset, speaker_genders, split_utterances
from lightning_tts.errors import ConfigError
from lightning_tts.learners.capabilities import SpeakerEncoding
from lightning_tts.plots import PROJECTIONS, project_embeddings, save_figure, speaker_map_figure


@dataclass
class ProjectionConfig:
    """Options of ``EmbeddingProjectionCallback`` (the ``projection`` section; ``every: 0`` turns it off).

    Attributes:
        every: run after every N-th validation.
        method: ``umap``, ``tsne`` or ``pca``.
        per_speaker: utterances per speaker.
    """

    every: int = 1
    method: str = "umap"
    per_speaker: int = 10


class EmbeddingProjectionCallback(pl.Callback):
    """Every ``every`` validations (rank 0 only): embed up to ``per_speaker`` utterances of each
    validation speaker, project them to 2-D (UMAP, t-SNE or PCA), and save
    ``directory/step<N>.png``; the figure also goes to every logger that takes figures (TensorBoard).
    Colour = speaker, marker = gender where the corpus knows it. Does nothing for learners that do
    not embed speakers (``SpeakerEncoding``).

    Args:
        directory: where the PNGs go.
        config: when, how and how many (``ProjectionConfig``).
        seed: projection seed (UMAP with a seed is deterministic and single-threaded).
    """

    def __init__(self, directory: str | Path, config: ProjectionConfig, seed: int = 0) -> None:
        super().__init__()
        if config.method not in PROJECTIONS:
            raise ConfigError(f"projection.method must be one of {PROJECTIONS}, got {config.method!r}")
        self.directory, self.every, self.method = Path(directory), config.every, config.method
        self.per_speaker, self.seed = config.per_speaker, seed
        self._validations = 0

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.every <= 0 or not isinstance(pl_module, SpeakerEncoding):
            return
        self._validations += 1
        dm = trainer.datamodule
        if self._validations % self.every or not trainer.is_global_zero or dm is None or len(dm.split.val) < 2:
            return
        embeddings = embed_dataset(pl_module, dm, split_utterances(dm, "val", self.per_speaker))
        points = project_embeddings(embeddings.vectors, self.method, self.seed)
        fig = speaker_map_figure(points, embeddings.speakers, speaker_genders(dm),
                                 title=f"{self.method.upper()} of validation speakers, step {trainer.global_step}")
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_figure"):
                experiment.add_figure("val/speaker_map", fig, global_step=trainer.global_step, close=False)
        save_figure(fig, self.directory / f"step{trainer.global_step:07d}.png")
