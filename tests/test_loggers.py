"""``trainer.logger`` and ``trainer.callbacks``: one-line errors, both loggers written, extra
callbacks attached, and the few-shot callback's audio in TensorBoard."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl

from lightning_tts.errors import ConfigError
from lightning_tts.training import (AppendingCSVLogger, build_callbacks, build_loggers, check_trainer_config,
                                   logger_names, run)


def assert_one_line_error(call, *needles: str) -> None:
    """``call()`` raises a one-line ConfigError holding every needle."""
    with pytest.raises(ConfigError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


def test_default_loggers_are_csv_plus_tensorboard_when_installed(monkeypatch) -> None:
    assert logger_names(None) == ["csv", "tensorboard"]  # tensorboard: in the test extra
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # find_spec: not installed
    assert logger_names(None) == ["csv"]
    assert logger_names([]) == [] and logger_names(["csv", "csv"]) == ["csv"]


def test_unknown_or_uninstalled_logger_is_one_line(monkeypatch) -> None:
    assert_one_line_error(lambda: logger_names(["csv", "neptune"]), "trainer.logger", "'neptune'", "csv, tensorboard, wandb, mlflow")
    for name in ("wandb", "mlflow", "tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)
        assert_one_line_error(lambda: logger_names([name]), "trainer.logger", f"pip install {name}")


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_optional_loggers_stay_local(name: str, tmp_path: Path, monkeypatch) -> None:
    """W&B offline without an API key; MLflow in a store under trainer.default_root_dir (only where installed)."""
    pytest.importorskip(name)
    for var in ("WANDB_API_KEY", "WANDB_MODE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    run_dir = tmp_path / "runs" / "multispeaker" / "version_0"
    (logger,) = build_loggers([name], run_dir, tmp_path / "runs")
    if name == "wandb":
        assert logger._offline and logger.save_dir == str(run_dir)
    else:
        assert logger._tracking_uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"


@pytest.mark.parametrize("spec, needles", [
    ("no_such_module.Callback", ("trainer.callbacks[0]=no_such_module.Callback", "cannot import", "no_such_module")),
    ("pytorch_lightning.callbacks.NoSuchCallback", ("trainer.callbacks[0]=pytorch_lightning.callbacks.NoSuchCallback",
                                                    "cannot import")),
    ("collections.OrderedDict", ("trainer.callbacks[0]=collections.OrderedDict", "not a pytorch_lightning.Callback")),
    ("pytorch_lightning.callbacks.model_summary", ("not a pytorch_lightning.Callback",)),  # a module, not a class
    ({"class": "pytorch_lightning.callbacks.Timer"}, ("trainer.callbacks[0]={'class'", "class_path")),
    (3, ("trainer.callbacks[0]=3",)),
    ({"class_path": "pytorch_lightning.callbacks.Timer", "init_args": {"hours": 2}},
     ("trainer.callbacks[0]=pytorch_lightning.callbacks.Timer", "bad init_args {'hours': 2}")),
])
def test_bad_callbacks_are_one_line(spec: object, needles: tuple[str, ...]) -> None:
    assert_one_line_error(lambda: build_callbacks([spec]), *needles)


def test_bad_trainer_options_fail_before_data_is_read(make_cfg, tmp_path: Path) -> None:
    common = ("data.corpus=ljspeech", f"data.root={tmp_path / 'absent'}")  # reading it would fail otherwise
    assert_one_line_error(lambda: run(make_cfg(*common, "trainer.logger=[csv,nope]"), progress=False), "trainer.logger", "nope")
    assert_one_line_error(lambda: run(make_cfg(*common, "trainer.callbacks=[x.Y]"), progress=False), "trainer.callbacks[0]=x.Y")
    check_trainer_config({"logger": None, "callbacks": []})  # the defaults pass


def test_cli_fit_with_a_bad_logger_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    from lightning_tts.cli import main

    assert main(["fit", "--no-progress", "data.corpus=ljspeech", f"data.root={tmp_path / 'absent'}",
                 "trainer.logger=[csv,nope]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trainer.logger: unknown logger 'nope'") and err.count("\n") == 1, err


class CallbackProbe(pl.Callback):
    """What callbacks the trainer holds at the start of training."""

    def __init__(self) -> None:
        self.callbacks: list[pl.Callback] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.callbacks = list(trainer.callbacks)


def test_csv_and_tensorboard_logs_callbacks_and_fewshot_audio(make_cfg, synthetic_root: Path) -> None:
    from pytorch_lightning.callbacks import ModelSummary, Timer
    from tensorboard.backend.event_processing.event_accumulator import AUDIO, EventAccumulator

    cfg = make_cfg(f"data.root={synthetic_root}", "data.splits.val=2", "data.splits.test=2", "data.batch_size=4",
                   "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null",
                   "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "trainer.logger=[csv,tensorboard]",
                   "trainer.callbacks=[pytorch_lightning.callbacks.Timer, {class_path: "
                   "pytorch_lightning.callbacks.ModelSummary, init_args: {max_depth: 2}}]",
                   "fewshot.speakers=1", "fewshot.queries=1", "fewshot.shots=2", "fewshot.steps=1",
                   files=("conf/learner/multispeaker.yaml",))
    probe = CallbackProbe()
    result = run(cfg, "fit", progress=False, callbacks=[probe])
    assert "val/mel_loss" in (result.run_dir / "logs" / "metrics.csv").read_text().splitlines()[0]
    summaries = [c for c in probe.callbacks if isinstance(c, ModelSummary)]
    assert any(isinstance(c, Timer) for c in probe.callbacks) and [s._max_depth for s in summaries] == [2]
    assert probe.callbacks.index(summaries[0]) < probe.callbacks.index(probe)  # config callbacks, then run()'s
    assert list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    tb = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={AUDIO: 0})
    tb.Reload()
    assert {"val/mel_loss", "val/fewshot/mcd"} <= set(tb.Tags()["scalars"])
    audio = sorted(tb.Tags()["audio"])
    speaker = audio[0].split("/")[1] if audio else None
    assert audio == [f"fewshot/{speaker}/{kind}" for kind in ("ceiling", "recording", "synthesis")], audio
    clips = {tag.split("/")[-1]: tb.Audio(tag) for tag in audio}
    assert all(len(c) == 1 and c[0].step == 2 and c[0].sample_rate == 16000 and c[0].length_frames > 0
               and c[0].encoded_audio_string[:4] == b"RIFF" for c in clips.values()), clips
    # the ceiling is the recording's own mel through the vocoder: as long as the recording, to a hop
    assert clips["recording"][0].length_frames > 8000  # synthetic utterances last over half a second
    assert abs(clips["ceiling"][0].length_frames - clips["recording"][0].length_frames) <= 256


def test_no_loggers(make_cfg, synthetic_root: Path) -> None:
    cfg = make_cfg(f"data.root={synthetic_root}", "data.splits.val=2", "data.splits.test=2", "data.batch_size=4",
                   "trainer.max_steps=1", "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false",
                   "trainer.logger=[]", "fewshot.every=0", files=("conf/learner/multispeaker.yaml",))
    result = run(cfg, "fit", progress=False)
    assert result.last_checkpoint is not None
    assert not (result.run_dir / "logs").exists() and not (result.run_dir / "tensorboard").exists()


def test_the_csv_log_survives_a_resume_and_a_new_column(tmp_path: Path) -> None:
    """A second logger on the same run (as after ``ckpt_path=last``) appends to ``metrics.csv`` instead
    of deleting it (Lightning's ``CSVLogger`` does), and a column first logged after the resume
    rewrites the file with every earlier row kept."""
    first = AppendingCSVLogger(save_dir=str(tmp_path), name="logs", version="")
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.log_metrics({"train/loss": 0.9, "val/loss": 1.2}, step=1)
    first.save()
    resumed = AppendingCSVLogger(save_dir=str(tmp_path), name="logs", version="")
    resumed.log_metrics({"train/loss": 0.8}, step=2)
    resumed.save()
    resumed.log_metrics({"train/loss": 0.7, "val/mcd": 5.0}, step=3)
    resumed.save()
    with open(tmp_path / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["train/loss"] for r in rows] == ["1.0", "0.9", "0.8", "0.7"]
    assert rows[1]["val/loss"] == "1.2" and rows[3]["val/mcd"] == "5.0" and rows[0]["val/mcd"] == ""
