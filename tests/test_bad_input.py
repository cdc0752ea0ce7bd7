"""Bad input: one line naming the problem, a non-zero exit code, nothing on disk lost or half-written;
and checkpoints that could run code when loaded are refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_tts.cli import main
from lightning_tts.learners import load_learner


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Broken inputs of every kind, made once."""
    tmp = tmp_path_factory.mktemp("bad")
    truncated = tmp / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    foreign = tmp / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, foreign)
    text = tmp / "notes.txt"
    text.write_text("not a checkpoint")
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("trainer: [unclosed\n")
    not_audio = tmp / "not_audio.wav"
    not_audio.write_text("RIFF? no")
    empty_dir = tmp / "empty_support"
    empty_dir.mkdir()
    return {"truncated": truncated, "foreign": foreign, "text": text, "bad_yaml": bad_yaml, "not_audio": not_audio,
            "empty_dir": empty_dir, "tmp": tmp}


# (argv whose {name} fields come from the fixtures, exit code, a fragment of the one-line message)
CASES = [
    (["fit", "trainer.max_stepz=3"], 2, "trainer.max_stepz"),
    (["fit", "trainer.max_steps=many"], 2, "trainer.max_steps"),
    (["fit", "learner.name=mamll"], 2, "did you mean: maml"),
    (["fit", "learner.inner_stepz=2"], 2, "learner.inner_stepz"),
    (["fit", "data.splits.test_speakers.0=p101"], 2, "data.splits.test_speakers in the command-line overrides"),
    (["fit", "learner.name=metric", "learner.encoder.width=3"], 2, "learner.encoder.width"),
    (["fit", "--config", "{bad_yaml}"], 2, "bad.yaml"),
    (["fit", "--config", "{tmp}/missing.yaml"], 2, "missing.yaml"),
    (["fit", "ckpt_path={tmp}/none.ckpt"], 1, "ckpt_path not found"),
    (["synthesize", "--checkpoint", "{tmp}/none.ckpt", "--text", "hi", "--out", "{tmp}/o.wav"], 1, "checkpoint not found"),
    (["synthesize", "--checkpoint", "{truncated}", "--text", "hi", "--out", "{tmp}/o.wav"], 1, "cannot load checkpoint"),
    (["synthesize", "--checkpoint", "{text}", "--text", "hi", "--out", "{tmp}/o.wav"], 1, "cannot load checkpoint"),
    (["synthesize", "--checkpoint", "{foreign}", "--text", "hi", "--out", "{tmp}/o.wav"], 1, "not a lightning_tts checkpoint"),
    (["synthesize", "--checkpoint", "{foreign}", "--text", "hi", "--out", "{tmp}/o.mp3"], 1, "--out must end in .wav or .flac"),
    (["synthesize", "--checkpoint", "{foreign}", "--text", "hi", "--out", "{tmp}/no/dir/o.wav"], 1, "does not exist"),
    (["synthesize", "--checkpoint", "{foreign}", "--text", "hi", "--out", "{tmp}/o.wav", "--pace", "0"], 2, "--pace must be > 0"),
    (["adapt", "--checkpoint", "{foreign}", "--support", "{empty_dir}", "--out", "{tmp}/v.pt", "--steps", "-1"], 2, "--steps must be >= 0"),
    (["adapt", "--checkpoint", "{foreign}", "--support", "{empty_dir}", "--out", "{tmp}/v.pt", "--lr", "0"], 2, "--lr must be > 0"),
    (["adapt", "--checkpoint", "{foreign}", "--support", "{empty_dir}", "--out", "{tmp}/none/v.pt"], 1, "does not exist"),
    (["evaluate", "--checkpoint", "{foreign}", "--shots", "1,x", "--out", "{tmp}/e"], 2, "--shots must be comma-separated"),
    (["evaluate", "--checkpoint", "{foreign}", "--steps", "a", "--out", "{tmp}/e"], 2, "--steps must be comma-separated"),
    (["embed", "--checkpoint", "{foreign}", "--out", "{tmp}/emb", "--method", "mds"], 2, "--method must be one of"),
    (["embed", "--checkpoint", "{foreign}", "--out", "{tmp}/emb", "--per-speaker", "0"], 2, "--per-speaker must be >= 1"),
    (["slurm", "--out", "{tmp}/s", "--nodes", "0"], 2, "--nodes must be >= 1"),
    (["slurm", "--out", "{tmp}/s", "--time", "a week"], 2, "--time must be SLURM time"),
    (["synthetic-corpus", "--out", "{tmp}/c", "--speakers", "0"], 2, "--speakers must be >= 1"),
    (["synthetic-corpus", "--out", "{tmp}/no/dir/c"], 1, "does not exist"),
    (["preprocess", "data.corpus=vctk", "data.root={tmp}/no_vctk"], 1, "no_vctk"),
    (["preprocess", "data.corpus=timit"], 2, "data.corpus"),
]


@pytest.fixture(scope="module")
def trained(files, synthetic_root: Path) -> dict[str, str]:
    """A real (2-step) baseline checkpoint on the session corpus, a support folder, bad references."""
    import soundfile as sf

    tmp = files["tmp"]
    data = [f"data.root={synthetic_root}", f"data.cache_dir={tmp / 'cache'}", "data.splits.val=2", "data.splits.test=2",
            "data.preprocess_workers=1"]
    assert main(["fit", "--no-progress", "learner.name=multispeaker", *data, f"trainer.default_root_dir={tmp / 'runs'}",
                 "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null",
                 "trainer.limit_val_batches=1", "fewshot.every=0", "data.batch_size=4"]) == 0
    ckpt = next((tmp / "runs").rglob("last.ckpt"))
    support = tmp / "support"
    support.mkdir()
    for wav in sorted(synthetic_root.rglob("p101_00[1-3]_mic1.flac")):
        (support / wav.name).write_bytes(wav.read_bytes())
        (support / wav.name.replace(".flac", ".txt")).write_text("Please call Stella.")
    corrupt = tmp / "corrupt_support"
    corrupt.mkdir()
    (corrupt / "a.wav").write_bytes(b"RIFF\x00\x00garbage")
    (corrupt / "a.txt").write_text("Please call Stella.")
    (corrupt / "b.wav").write_bytes(b"")
    (corrupt / "b.txt").write_text("Please call Stella.")
    short = tmp / "short.wav"
    sf.write(short, [0.1] * 200, 16000)
    empty = tmp / "empty.wav"
    empty.write_bytes(b"")
    speakers = load_learner(ckpt).speakers  # training speakers, for the evaluation that must refuse them
    return {"ckpt": str(ckpt), "data": " ".join(data), "support": str(support), "corrupt": str(corrupt),
            "short": str(short), "empty": str(empty), "trained_0": speakers[0], "trained_1": speakers[1]}


# cases that need a real checkpoint or corpus; "{data}" expands to the corpus overrides
CHECKPOINT_CASES = [
    (["validate", "--checkpoint", "{ckpt}", "{data}", "features.n_mels=40"], 1, "features.n_mels=80 but the config has features.n_mels=40"),
    (["embed", "--checkpoint", "{ckpt}", "--out", "{tmp}/emb", "{data}"], 1, "has no speaker encoder"),
    (["evaluate", "--checkpoint", "{ckpt}", "--shots", "1", "--steps", "0", "--out", "{tmp}/ev", "{data}",
      "fewshot.speaker_encoder={ckpt}"], 1, "must be a metric run"),
    (["evaluate", "--checkpoint", "{ckpt}", "--shots", "1", "--steps", "0", "--out", "{tmp}/ev", "{data}",
      "fewshot.speaker_encoder=resemblizer"], 1, "checkpoint not found: resemblizer"),
    (["evaluate", "--checkpoint", "{ckpt}", "--shots", "40", "--out", "{tmp}/ev", "{data}"], 1, "no test speaker has 40"),
    (["evaluate", "--checkpoint", "{ckpt}", "--adapt-lr", "0", "--out", "{tmp}/ev", "{data}"], 1, "--adapt-lr must be > 0, got 0.0"),
    (["evaluate", "--checkpoint", "{ckpt}", "--adapt-option", "adapt_anchr=1", "--out", "{tmp}/ev", "{data}"], 1,
     "adaptation option 'adapt_anchr' is not one of"),
    (["evaluate", "--checkpoint", "{ckpt}", "--adapt-option", "adapt_anchor=-1", "--out", "{tmp}/ev", "{data}"], 1,
     "adapt_anchor must be >= 0, got -1.0"),
    (["evaluate", "--checkpoint", "{ckpt}", "--adapt-option", "anchor", "--out", "{tmp}/ev", "{data}"], 2,
     "--adapt-option takes KEY=VALUE, got 'anchor'"),
    (["evaluate", "--checkpoint", "{ckpt}", "--metrics", "mcd,loudness", "--out", "{tmp}/ev", "{data}"], 2,
     "--metrics: unknown metric 'loudness': one of"),
    (["evaluate", "--checkpoint", "{ckpt}", "--metrics", "wer", "--out", "{tmp}/ev", "{data}", "fewshot.wer=false"], 2,
     "--metrics: metrics wer and cer need the recogniser, but fewshot.wer=false"),
    (["evaluate", "--checkpoint", "{ckpt}", "--shots", "1", "--steps", "0", "--out", "{tmp}/ev", "{data}",
      "data.splits.val_speakers=[{trained_0}]", "data.splits.test_speakers=[{trained_1}]"], 1,
     "was trained on 1 of the test speakers (p1"),
    (["synthesize", "--checkpoint", "{ckpt}", "--text", "", "--out", "{tmp}/o.wav"], 1, "empty text"),
    (["synthesize", "--checkpoint", "{ckpt}", "--text", "§§§", "--out", "{tmp}/o.wav"], 1, "no pronounceable symbols"),
    (["synthesize", "--checkpoint", "{ckpt}", "--speaker", "nobody", "--text", "Hi.", "--out", "{tmp}/o.wav"], 1, "unknown speaker 'nobody'"),
    (["synthesize", "--checkpoint", "{ckpt}", "--reference", "{short}", "--text", "Hi.", "--out", "{tmp}/o.wav"], 1, "is too short"),
    (["synthesize", "--checkpoint", "{ckpt}", "--reference", "{not_audio}", "--text", "Hi.", "--out", "{tmp}/o.wav"], 1, "cannot read reference audio"),
    (["synthesize", "--checkpoint", "{ckpt}", "--reference", "{empty}", "--text", "Hi.", "--out", "{tmp}/o.wav"], 1, "cannot read reference audio"),
    (["synthesize", "--checkpoint", "{ckpt}", "--reference", "{support}/p101_001_mic1.flac", "--text", "Hi.", "--out",
      "{tmp}/o.wav"], 1, "cannot clone a voice from reference audio alone"),
    (["synthesize", "--checkpoint", "{ckpt}", "--adapted", "{ckpt}", "--text", "Hi.", "--out", "{tmp}/o.wav"], 1, "adapted"),
    (["adapt", "--checkpoint", "{ckpt}", "--support", "{support}", "--out", "{tmp}/v.pt", "--shots", "50"], 1, "50 needed"),
    (["adapt", "--checkpoint", "{ckpt}", "--support", "{corrupt}", "--out", "{tmp}/v.pt"], 1, "usable utterances"),
    (["adapt", "--checkpoint", "{ckpt}", "--support", "{tmp}/none", "--out", "{tmp}/v.pt"], 1, "support directory not found"),
    (["fit", "learner.name=maml", "{data}", "data.tasks.shots=20", "data.tasks.queries=20"], 1, "no training speaker has 40"),
    (["fit", "learner.name=metric", "{data}", "learner.metric_loss=cosine"], 1, "learner.metric_loss must be one of"),
    (["fit", "learner.name=metric", "{data}", "projection.method=mds"], 2, "projection.method must be one of"),
    (["fit", "{data}", "model.heads=3"], 2, "model: model dim 128 is not divisible by heads 3"),
    (["fit", "{data}", "model.postnet_layers=1"], 2, "model: postnet_layers must be 0 (no postnet) or at least 2, got 1"),
]


@pytest.mark.parametrize("argv, code, fragment", CHECKPOINT_CASES,
                         ids=[" ".join(c[0][:1] + c[0][3:4]) + f" #{i}" for i, c in enumerate(CHECKPOINT_CASES)])
def test_bad_input_with_a_real_checkpoint(files, trained, argv: list[str], code: int, fragment: str, capsys) -> None:
    values = {**{k: str(v) for k, v in files.items()}, **trained}
    args = [x for a in argv for x in (a.format(**values).split() if a == "{data}" else [a.format(**values)])]
    capsys.readouterr()
    got = main([*args, "--no-progress", "trainer.max_steps=1"] if args[0] == "fit" else [*args, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert got == code, err
    assert fragment in err.splitlines()[-1], err
    assert err.splitlines()[-1].startswith("error:")


@pytest.mark.parametrize("argv, code, fragment", CASES, ids=[" ".join(c[0][:3]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input_gives_one_line_and_exit_code(files, argv: list[str], code: int, fragment: str, capsys) -> None:
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    capsys.readouterr()
    try:
        got = main([*args, "--no-progress"])
    except SystemExit as exit:  # argparse errors
        got = exit.code
    err = capsys.readouterr().err.strip()
    assert got == code, err
    last = err.splitlines()[-1]
    assert fragment in last, err
    assert last.startswith("error:") or "error:" in last


def test_failed_commands_leave_existing_files_intact(files, capsys) -> None:
    out = files["tmp"] / "keep.wav"
    out.write_bytes(b"precious")
    assert main(["synthesize", "--checkpoint", str(files["truncated"]), "--text", "hi", "--out", str(out)]) == 1
    assert out.read_bytes() == b"precious"
    assert not [p for p in files["tmp"].iterdir() if ".tmp-" in p.name]


class _Payload:
    """Unpickling this would create the file ``MARK``: a checkpoint that runs code when loaded."""

    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Payload.mark}",))


def test_crafted_checkpoint_is_refused_without_running_its_code(tmp_path: Path) -> None:
    _Payload.mark = str(tmp_path / "pwned")
    path = tmp_path / "crafted.ckpt"
    torch.save({"hyper_parameters": {"learner_name": "multispeaker"}, "state_dict": {}, "x": _Payload()}, path)
    with pytest.raises(Exception, match="cannot load checkpoint"):
        load_learner(path)
    assert not (tmp_path / "pwned").exists()
    assert main(["synthesize", "--checkpoint", str(path), "--text", "hi", "--out", str(tmp_path / "o.wav")]) == 1
    assert not (tmp_path / "pwned").exists()
