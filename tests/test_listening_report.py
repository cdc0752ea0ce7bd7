"""The listening report: ``evaluate`` keeps samples and writes ``report.html``, and a real browser
(headless Chromium) loads every clip of it; the pure HTML builder on hand-made results."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lightning_tts.cli import main
from lightning_tts.config import load_config
from lightning_tts.evaluation.listening import listening_html, player_columns
from lightning_tts.evaluation.samples import slug
from lightning_tts.evaluation.stats import mean_ci
from lightning_tts.training import run

VOID = {"meta", "img", "br", "hr", "input", "link", "source"}


class _Page(HTMLParser):
    """Collects every tag's attributes and checks that non-void tags are balanced."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.open: list[str] = []
        self.title = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] == "title":
            self.title += data


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert not parser.open, f"unclosed tags {parser.open}"
    return parser


def hand_made() -> tuple[dict, list[dict]]:
    """Results with two systems (one with markup in its name) on shots 1,2 x steps 0,3, and one speaker's
    query clips for every column but one."""
    systems = ['maml (run<b>"1"</b>)', "multispeaker (version_0)"]
    cell = mean_ci([5.0, 6.0, 7.0])
    rows = [{"system": s, "shots": None, "steps": None, "metrics": {"mcd": mean_ci([0.0, 0.0])}}
            for s in ("ground truth", "vocoder ceiling")]
    rows += [{"system": s, "shots": k, "steps": n, "metrics": {"mcd": cell}} for s in systems for k in (1, 2)
             for n in (0, 3)]
    results = {"shots": [1, 2], "steps": [0, 3], "seed": 0, "split_seed": 1, "rows": rows,
               "speakers": {"p1<x>": {"support": ["a"], "query": ["q&1"]}},
               "checkpoints": [{"system": s, "learner": "maml", "path": "/abs/run/last.ckpt", "sha256": "ab" * 32}
                               for s in systems]}
    samples = []
    for system, k, n in player_columns(results)[:-1]:  # the last column's clip is missing
        stem = f"samples/{slug('p1<x>')}/{slug(system)}" + ("" if k is None else f"_K{k}_S{n}") + "_q-1"
        samples.append({"speaker": "p1<x>", "query": "q&1", "text": "Say <hi> & 'bye'", "system": system,
                        "shots": k, "steps": n, "audio": stem + ".wav", "mel": stem + ".png"})
    return results, samples


def test_builder_escapes_links_relatively_and_has_every_column() -> None:
    results, samples = hand_made()
    page = listening_html(results, samples, ["mcd"], images=["adaptation_curves.png"])
    parsed = parse(page)
    assert "<b>" not in page and "<x>" not in page and "<hi>" not in page
    assert "maml (run&lt;b&gt;&quot;1&quot;&lt;/b&gt;)" in page and "Say &lt;hi&gt; &amp; &#x27;bye&#x27;" in page
    links = [a[key] for _, a in parsed.tags for key in ("src", "href") if key in a]
    assert links and "://" not in page and all(not link.startswith("/") for link in links)
    assert {a["src"] for t, a in parsed.tags if t == "audio"} == {s["audio"] for s in samples}
    assert all(a.get("preload") == "metadata" and "controls" in a for t, a in parsed.tags if t == "audio")
    assert {a["src"] for t, a in parsed.tags if t == "img"} == {s["mel"] for s in samples} | {"adaptation_curves.png"}
    assert page.count("<th>K=1, 0 steps</th>") == page.count("<th>K=2, 3 steps</th>") == 2  # both systems
    assert ">recording</th>" in page and ">vocoder ceiling</th>" in page
    assert page.count('class="missing"') == 1 and "/abs/run" not in page
    assert page.count("<td class=\"num\">6.000 ± 1.132</td>") == 2 * 2 * 2  # the results.md numbers
    assert "ground truth: 0.000 ± 0.000" in page and "mcd (lower is better)" in page
    assert "loadedmetadata" in page and parsed.title == "listening report"
    nothing = listening_html(results, [], ["mcd"])
    assert "<audio" not in nothing and "--samples 0" in nothing


def test_slug_is_filesystem_safe() -> None:
    assert slug("maml (version_0)") == "maml-version_0"
    assert slug("../a b/c") == "a-b-c" and slug("...") == "x"


@pytest.fixture(scope="module")
def evaluation(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``evaluate --samples 1`` of a barely trained baseline on one test speaker (K=1, steps 0 and 1)."""
    tmp = tmp_path_factory.mktemp("listening")
    common = [f"data.root={synthetic_root}", f"data.cache_dir={tmp / 'cache'}", f"trainer.default_root_dir={tmp / 'runs'}",
              "data.splits.val=1", "data.splits.test=1", "trainer.limit_val_batches=0", "data.tasks.queries=2",
              "trainer.enable_progress_bar=false"]
    trained = run(load_config(["conf/learner/multispeaker.yaml"], [*common, "trainer.max_steps=2"]), progress=False)
    out = tmp / "eval"
    assert main(["evaluate", "--checkpoint", str(trained.last_checkpoint), "--shots", "1", "--steps", "0,1",
                 "--samples", "1", "--out", str(out), "--no-progress", *common[:5]]) == 0
    return out


def test_evaluate_keeps_samples_and_lists_them(evaluation: Path) -> None:
    results = json.loads((evaluation / "results.json").read_text())
    assert len(results["samples"]) == 1 * 1 * (2 + 2)  # 1 speaker x 1 query x (2 references + 2 cells)
    names = sorted(Path(s["audio"]).name for s in results["samples"])
    query = slug(results["speakers"][results["samples"][0]["speaker"]]["query"][0])
    system = slug(results["checkpoints"][0]["system"])
    assert names == sorted([f"recording_{query}.wav", f"ceiling_{query}.wav",
                            f"{system}_K1_S0_{query}.wav", f"{system}_K1_S1_{query}.wav"])
    for sample in results["samples"]:
        for key in ("audio", "mel"):
            assert not Path(sample[key]).is_absolute() and (evaluation / sample[key]).stat().st_size > 0
    assert (evaluation / "report.html").is_file()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")
def test_report_loads_every_clip_in_a_browser(evaluation: Path, tmp_path: Path) -> None:
    page = (evaluation / "report.html").read_text()
    players = page.count("<audio ")
    assert players == 4
    assert browser_title(evaluation / "report.html", tmp_path / "profile") == f"loaded {players}/{players}"
    # a missing clip is reported, so the check above is not vacuous
    broken = tmp_path / "broken"
    shutil.copytree(evaluation, broken)
    first = json.loads((broken / "results.json").read_text())["samples"][0]["audio"]
    (broken / first).unlink()
    assert browser_title(broken / "report.html", tmp_path / "profile2") == f"error {first}"


def browser_title(page: Path, profile: Path) -> str:
    """The <title> of ``page`` after headless Chromium has loaded it (10 s of virtual time)."""
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={profile}", "--autoplay-policy=no-user-gesture-required",
                          "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    match = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert match, dom[:500]
    return match.group(1)
