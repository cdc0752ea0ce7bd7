"""SpeakerTaskDataModule: splits, modes, fixed evaluation batches, and 2-process DDP."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_vctk
from lightning_tts.audio import FeatureParams
from lightning_tts.data.corpora import CorpusIndex, SkipReport, Utterance
from lightning_tts.data.datamodule import SpeakerTaskDataModule, split_speakers
from lightning_tts.data.plans import SpeakerBatches, TaskBatches, UtteranceBatches
from lightning_tts.data.tasks import TaskBatch, UtteranceBatch
from lightning_tts.errors import DataError


def _dm(make_cfg, root: Path, mode: str, *overrides: str) -> SpeakerTaskDataModule:
    cfg = make_cfg(f"data.root={root}", "data.splits.val=2", "data.splits.test=2", *overrides)
    plan = {"episodic": TaskBatches(), "utterance": UtteranceBatches(), "speakers": SpeakerBatches()}[mode]
    dm = SpeakerTaskDataModule(cfg.data, FeatureParams.from_config(cfg.features), plan, seed=0, progress=False)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_splits_are_speaker_disjoint_and_heldout_is_excluded(make_cfg, synthetic_root: Path) -> None:
    dm = _dm(make_cfg, synthetic_root, "utterance", "data.batch_size=4")
    split = dm.split
    assert len(split.train) == 6 and len(split.val) == 2 and len(split.test) == 2
    assert not set(split.train) & (set(split.val) | set(split.test)) and not set(split.val) & set(split.test)
    assert len(split.heldout) == 6 * 2
    train_ids = {uid for b in dm.train_dataloader() for uid in b.utterance_ids}
    val_batches = list(dm.val_dataloader())
    val_ids = {uid for b in val_batches for uid in b.utterance_ids}
    assert val_ids == split.heldout and not train_ids & val_ids
    assert {spk for b in val_batches for spk in b.speakers} <= set(split.train)
    assert "speakers train/val/test = 6/2/2" in dm.describe()


def test_episodic_batches(make_cfg, synthetic_root: Path) -> None:
    dm = _dm(make_cfg, synthetic_root, "episodic", "data.tasks.shots=3", "data.tasks.queries=2",
             "data.tasks.tasks_per_batch=2", "data.tasks.tasks_per_epoch=8")
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and all(isinstance(b, TaskBatch) for b in batches)
    b = batches[0]
    assert b.support.mels.shape[0] == 6 and b.query.mels.shape[0] == 4 and b.support.mels.shape[2] == 80
    for task in b.tasks():
        assert set(task.support.speakers) == set(task.query.speakers) == {task.speaker}
        assert not set(task.support.utterance_ids) & set(task.query.utterance_ids)
        assert task.speaker in dm.split.train
        assert (task.support.speaker_ids >= 0).all()
    val = list(dm.val_dataloader())
    assert val and {t.speaker for vb in val for t in vb.tasks()} == set(dm.split.val)
    assert all((vb.support.speaker_ids == -1).all() for vb in val)  # unseen speakers have no table entry
    again = [[t.query.utterance_ids for t in vb.tasks()] for vb in dm.val_dataloader()]
    assert again == [[t.query.utterance_ids for t in vb.tasks()] for vb in val]


def test_speakers_mode(make_cfg, synthetic_root: Path) -> None:
    dm = _dm(make_cfg, synthetic_root, "speakers", "data.speakers_per_batch=3", "data.utterances_per_speaker=4")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, UtteranceBatch) and len(batch) == 12 and len(set(batch.speakers)) == 3
    test = list(dm.test_dataloader())
    assert {s for b in test for s in b.speakers} == set(dm.split.test)


def test_too_few_utterances_are_excluded_with_a_warning(make_cfg, tmp_path: Path) -> None:
    root = write_vctk(tmp_path / "vctk", speakers=4, utts=8, sample_rate=16000)
    for u in range(1, 6):
        (root / "txt" / "p228" / f"p228_{u:03d}.txt").unlink()  # p228 keeps 3 utterances
    common = ("data.corpus=vctk", "data.splits.val_speakers=[p227]", "data.splits.test_speakers=[p226]",
              "data.splits.heldout_utterances=0", "data.tasks.tasks_per_batch=1")
    dm = _dm(make_cfg, root, "episodic", *common, "data.tasks.shots=2", "data.tasks.queries=2")
    with pytest.warns(UserWarning, match=r"1 speakers have fewer than 4 utterances.*\['p228'\]"):
        sampler = dm.train_dataloader().sampler
    assert sampler.speakers == ["p225"]
    dm = _dm(make_cfg, root, "episodic", *common, "data.tasks.shots=5", "data.tasks.queries=5")
    with pytest.raises(DataError, match="no training speaker has 10 utterances"), pytest.warns(UserWarning):
        dm.train_dataloader()


def test_workers_give_the_same_batches(make_cfg, synthetic_root: Path) -> None:
    serial = _dm(make_cfg, synthetic_root, "episodic", "data.tasks.tasks_per_epoch=8")
    parallel = _dm(make_cfg, synthetic_root, "episodic", "data.tasks.tasks_per_epoch=8", "data.num_workers=2")
    ids = lambda dm: [b.query.utterance_ids for b in dm.train_dataloader()]  # noqa: E731
    assert ids(serial) == ids(parallel)


def test_two_process_ddp_draws_disjoint_tasks(tmp_path: Path, make_cfg, synthetic_root: Path) -> None:
    _dm(make_cfg, synthetic_root, "episodic")  # build the cache once, outside the ranks
    out = tmp_path / "ranks"
    out.mkdir()
    probe = Path(__file__).parent / "ddp_probe.py"
    proc = subprocess.run([sys.executable, str(probe), str(synthetic_root), str(tmp_path / "cache"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in ("0", "1"):
        tasks = [{(t["speaker"], tuple(sorted(t["support"])), tuple(sorted(t["query"]))) for t in r[epoch]}
                 for r in ranks]
        assert len(tasks[0]) == len(tasks[1]) == 4 * 2
        assert not tasks[0] & tasks[1]
    assert ranks[0]["0"] != ranks[0]["1"]  # a new epoch draws new tasks


def _index(speakers: int = 4) -> CorpusIndex:
    """A corpus reading of ``speakers`` speakers p1.. with 5 utterances each (no audio needed)."""
    utts = [Utterance(f"p{s}_{u}", f"p{s}", f"/c/p{s}_{u}.wav", "Hi.", 1.0) for s in range(1, speakers + 1)
            for u in range(5)]
    return CorpusIndex("vctk", "/c", utts, {f"p{s}": {} for s in range(1, speakers + 1)}, SkipReport())


def _splits(**values: object) -> dict:
    return {"file": None, "val_speakers": [], "test_speakers": [], "val": 1, "test": 1, "seed": 0,
            "heldout_utterances": 0, **values}


@pytest.mark.parametrize("stage", ["val", "test"])
def test_a_split_file_that_matches_no_speaker_names_the_cause(tmp_path: Path, stage: str) -> None:
    other = "test" if stage == "val" else "val"
    split_file = tmp_path / "split.yaml"
    split_file.write_text(f"{stage}: [p225, p226]\n{other}: [p1]\n")
    with pytest.raises(DataError) as err:
        split_speakers(_index(), _splits(file=str(split_file)))
    message = str(err.value)
    assert f"data.splits.file {split_file} names 2 {stage} speakers and none is in the vctk corpus at /c" in message
    assert "data.splits.file=null" in message and f"data.splits.{stage}_speakers=[...]" in message
    assert "\n" not in message


@pytest.mark.parametrize("stage", ["val", "test"])
def test_a_speaker_list_that_matches_no_speaker_names_the_cause(stage: str) -> None:
    with pytest.raises(DataError, match=rf"data.splits.{stage}_speakers names 1 {stage} speakers and none is in "
                                        rf"the vctk corpus at /c .*data.splits.file=null"):
        split_speakers(_index(), _splits(**{f"{stage}_speakers": ["p99"]}))


def test_a_split_that_leaves_no_training_speaker_names_the_cause(tmp_path: Path) -> None:
    split_file = tmp_path / "split.yaml"
    split_file.write_text("val: [p1, p2]\ntest: [p3, p4]\n")
    with pytest.raises(DataError, match=r"the train split matches no speaker: data.splits.file .* puts all 4 speakers "
                                        r"of the vctk corpus at /c in val or test"):
        split_speakers(_index(), _splits(file=str(split_file)))
    with pytest.raises(DataError, match=r"leaves no training speaker in the vctk corpus at /c \(4 speakers\): lower"):
        split_speakers(_index(), _splits(val=2, test=2))
