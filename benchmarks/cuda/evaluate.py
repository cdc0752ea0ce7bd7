"""Evaluation on CUDA against the same on the CPU (MCD, STOI, F0 RMSE; no PESQ/judge wheels here), the API on CUDA, GPU section."""
import json, os, tempfile, time
from pathlib import Path
import torch
from lightning_tts.config import load_config
from lightning_tts.evaluation.grid import run_evaluation
from lightning_tts.api import TTS

out = Path(os.environ["OUT"])
cfg = load_config([], ["data.root=/tmp/corpus", "data.cache_dir=/tmp/cache", "data.synthetic.speakers=20",
                       "data.synthetic.utterances=12", "fewshot.wer=false"])
report = {}
for name in ("multispeaker-32-true", "maml-32-true", "maml-zeroshot-element"):
    ckpt = f"/tmp/runs/{name}/checkpoints/last.ckpt"
    cells = {}
    for device in ("cuda", "cpu"):
        t0 = time.time()
        r = run_evaluation(cfg, [ckpt], [2], [0, 5], f"/tmp/eval-{name}-{device}", device=device, samples=1, split="val",
                           metrics=["mcd", "stoi", "f0_rmse"])
        cells[device] = {f"{row['steps']}": {m: row["metrics"][m]["mean"] for m in ("mcd", "stoi", "f0_rmse")}
                         for row in r["rows"] if row["shots"] is not None}
        cells[device]["seconds"] = round(time.time() - t0, 1)
    diff = max(abs(cells["cuda"][s][m] - cells["cpu"][s][m]) for s in ("0", "5") for m in ("mcd", "f0_rmse"))
    report[name] = {**cells, "max_abs_diff_mcd_f0": diff}
    print(name, json.dumps(report[name]))
wav = sorted(Path("/tmp/corpus").rglob("*.flac"))[:3]
tts = TTS.from_checkpoint("/tmp/runs/mann-bf16-mixed/checkpoints/last.ckpt", device="cuda")
voice = tts.clone([str(w) for w in wav])
spoken = tts.to_file("A short sentence on the graphics card.", voice, out / "api_cuda.wav")
print("api on", tts.device, "->", spoken)
report["api"] = {"device": str(tts.device), "wav": str(spoken)}
try:
    from benchmarks.run import corpus, gpu_section
    with tempfile.TemporaryDirectory() as tmp:
        root = corpus(Path(tmp), speakers=8, utterances=12)
        report["gpu_section"] = gpu_section(root, Path(tmp), repeats=5)
        print("gpu_section", json.dumps(report["gpu_section"]))
except Exception as err:  # the benchmark module's own imports
    print("gpu_section failed:", repr(err))
(out / "evaluate.json").write_text(json.dumps(report, indent=1, default=str))
