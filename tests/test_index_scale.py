"""A LibriTTS-sized index (2,456 speakers, 375k utterances, ~585 h) fits in well under 1 GB."""
import json
import subprocess
import sys


def test_libritts_scale_index_memory(tmp_path) -> None:
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.index_scale", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["utterances"] == 375_000 and result["speakers"] == 2456 and 570 < result["hours"] < 600
    # measured here: ~200 MB for the index itself (process total ~910 MB, ~710 MB of it torch + Lightning)
    assert result["index_rss_mb"] < 400
    assert result["task_batches_per_s"] > 1000
