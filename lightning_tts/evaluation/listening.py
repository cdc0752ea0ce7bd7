"""The listening report: one self-contained HTML page (``report.html``) of an evaluation.

Pure functions from ``evaluate``'s results and its kept samples (``samples.SampleWriter.entries``) to
an HTML string: a grid of audio players (rows = speaker x query; columns = recording, vocoder ceiling,
then every system at every shots x steps) with a mel thumbnail below each player, the results tables
(the numbers of ``results.md``: mean ± 95 % CI) and the adaptation-curve images. Nothing is fetched
from the network (inline CSS and script, no fonts); audio and images are referenced by relative
paths, so the output folder can be zipped and opened anywhere. Every text is HTML-escaped.

An inline script counts the players' ``loadedmetadata`` events and sets ``document.title`` to
``loaded N/N`` once all have loaded, or to ``error <src>`` when one fails: a headless browser's
``--dump-dom`` shows whether every clip plays.
"""
from __future__ import annotations

import html
from pathlib import PurePath
from typing import Any, Iterable, Optional, Sequence
from urllib.parse import quote

from lightning_tts.evaluation.scoring import LOWER_IS_BETTER
from lightning_tts.evaluation.stats import format_cost, format_mean_ci

#: Column headings of the reference rows' clips (their system names in the results).
REFERENCE_LABELS = {"ground truth": "recording", "vocoder ceiling": "vocoder ceiling"}

#: A player column: (system, shots, steps); shots and steps are None for the reference clips.
Column = tuple[str, Optional[int], Optional[int]]

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 1.6em; } h3 { font-size: 1em; margin: 1.2em 0 .3em; }
nav a { margin-right: 1em; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .3em .45em; vertical-align: top; text-align: left; }
thead th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.players th.row { position: sticky; left: 0; background: #fafafa; min-width: 11em; max-width: 16em; font-weight: normal; }
table.players th.row .text { color: #555; font-style: italic; display: block; margin-top: .2em; }
table.players td { min-width: 190px; }
table.players audio { width: 190px; height: 32px; display: block; }
table.players img.mel { display: block; width: 190px; height: 70px; margin-top: 2px; image-rendering: pixelated; }
td.missing { color: #999; text-align: center; vertical-align: middle; }
.refs { font-size: .85em; color: #444; margin: .3em 0 0; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
.note { color: #555; font-size: .9em; max-width: 60em; }
"""

SCRIPT = """
(function () {
  var players = document.querySelectorAll("audio");
  var loaded = 0, failed = false;
  function show() { if (!failed) { document.title = "loaded " + loaded + "/" + players.length; } }
  function fail(player) { failed = true; document.title = "error " + player.getAttribute("src"); }
  Array.prototype.forEach.call(players, function (player) {
    var done = false;
    function once() { if (!done) { done = true; loaded += 1; show(); } }
    player.addEventListener("loadedmetadata", once);
    player.addEventListener("error", function () { fail(player); });
    if (player.error) { fail(player); } else if (player.readyState >= 1) { once(); }
  });
  show();
})();
"""


def listening_html(results: dict[str, Any], samples: Sequence[dict[str, Any]], metrics: Sequence[str],
                   images: Sequence[str] = ()) -> str:
    """The whole page.

    Args:
        results: ``run_evaluation``'s results (``rows``, ``shots``, ``steps``, ``speakers``, ...).
        samples: kept clips, each with ``speaker``, ``query``, ``text``, ``system``, ``shots``, ``steps``
            and the relative paths ``audio`` and ``mel`` (see ``samples.SampleWriter``).
        metrics: the metrics to tabulate, in order.
        images: relative paths of the figures to show (the adaptation curves).
    """
    speakers = results["speakers"]
    queries = len(next(iter(speakers.values()))["query"]) if speakers else 0
    heading = f"Few-shot evaluation: {len(speakers)} test speakers, {queries} query utterances each"
    body = [f"<h1>{_e(heading)}</h1>",
            '<nav><a href="#listen">listen</a><a href="#results">results</a><a href="#curves">adaptation curves</a>'
            '<a href="#runs">checkpoints</a></nav>',
            '<h2 id="listen">Listen</h2>', players_html(results, samples),
            '<h2 id="results">Results</h2>', tables_html(results, metrics),
            '<h2 id="curves">Adaptation curves</h2>',
            *(f'<figure><img src="{_url(path)}" alt="{_e(path)}"></figure>' for path in images),
            '<h2 id="runs">Checkpoints</h2>', checkpoints_html(results)]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>listening report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n")


def player_columns(results: dict[str, Any]) -> list[Column]:
    """The reference clips, then every system (in results order) at every shots x steps."""
    rows = results["rows"]
    refs = [(r["system"], None, None) for r in rows if r["shots"] is None]
    systems = list(dict.fromkeys(r["system"] for r in rows if r["shots"] is not None))
    return refs + [(s, k, n) for s in systems for k in results["shots"] for n in results["steps"]]


def players_html(results: dict[str, Any], samples: Sequence[dict[str, Any]]) -> str:
    """The grid of players: one row per (speaker, query) with kept clips, one column per ``player_columns``."""
    if not samples:
        return '<p class="note">No samples were kept (<code>evaluate --samples 0</code>).</p>'
    columns = player_columns(results)
    clips = {(s["speaker"], s["query"], s["system"], s["shots"], s["steps"]): s for s in samples}
    texts = {(s["speaker"], s["query"]): s.get("text", "") for s in samples}
    refs = [c for c in columns if c[1] is None]
    grid = [c for c in columns if c[1] is not None]
    top = ['<th rowspan="2">speaker / query</th>', *(f'<th rowspan="2">{_e(REFERENCE_LABELS.get(s, s))}</th>'
                                                     for s, _, _ in refs)]
    systems = list(dict.fromkeys(s for s, _, _ in grid))
    top += [f'<th colspan="{sum(1 for c in grid if c[0] == s)}">{_e(s)}</th>' for s in systems]
    cells = [f"<th>K={k}, {n} steps</th>" for _, k, n in grid]
    lines = ['<p class="note">Rows: test speaker &times; query text. Columns: the recording, the vocoder ceiling '
             '(recording &rarr; mel &rarr; vocoder), then each system adapted on K support utterances for the '
             'given number of steps. The mel spectrogram of each clip is below its player.</p>',
             '<div class="scroll"><table class="players">', "<thead>", "<tr>" + "".join(top) + "</tr>",
             "<tr>" + "".join(cells) + "</tr>", "</thead>", "<tbody>"]
    for speaker, query in texts:
        head = (f'<th class="row">{_e(speaker)} &middot; {_e(query)}'
                f'<span class="text">{_e(texts[speaker, query])}</span></th>')
        lines.append("<tr>" + head + "".join(player_cell(clips.get((speaker, query, *c))) for c in columns) + "</tr>")
    lines += ["</tbody>", "</table></div>"]
    return "\n".join(lines)


def player_cell(clip: Optional[dict[str, Any]]) -> str:
    """One ``<td>``: the clip's player and mel thumbnail, or a dash when the clip was not kept."""
    if clip is None:
        return '<td class="missing">&mdash;</td>'
    cell = REFERENCE_LABELS.get(clip["system"], clip["system"]) if clip["shots"] is None else \
        f"{clip['system']} K={clip['shots']} steps={clip['steps']}"
    label = _e(f"{cell}: {clip['query']}")
    return (f'<td><audio controls preload="metadata" src="{_url(clip["audio"])}" title="{label}"></audio>'
            f'<img class="mel" src="{_url(clip["mel"])}" alt="mel: {label}" title="{label}"></td>')


def tables_html(results: dict[str, Any], metrics: Sequence[str]) -> str:
    """One table per metric as in ``results.md``: rows = (shots, steps), columns = systems, mean ± 95 % CI;
    the reference rows below it."""
    rows = results["rows"]
    systems = list(dict.fromkeys(r["system"] for r in rows if r["shots"] is not None))
    refs = [r for r in rows if r["shots"] is None]
    lines = []
    for metric in metrics:
        arrow = "lower is better" if LOWER_IS_BETTER[metric] else "higher is better"
        lines += [f"<h3>{_e(metric)} ({arrow})</h3>", '<div class="scroll"><table class="results">',
                  "<thead><tr><th>shots</th><th>steps</th>" + "".join(f"<th>{_e(s)}</th>" for s in systems)
                  + "</tr></thead>", "<tbody>"]
        for k in results["shots"]:
            for n in results["steps"]:
                cells = [_cell(rows, system, k, n, metric) for system in systems]
                lines.append(f'<tr><td class="num">{k}</td><td class="num">{n}</td>' + "".join(cells) + "</tr>")
        lines += ["</tbody></table></div>",
                  '<p class="refs">' + "; ".join(f"{_e(r['system'])}: {_e(format_mean_ci(r['metrics'][metric]))}"
                                                for r in refs) + "</p>"]
    return "\n".join(lines)


def checkpoints_html(results: dict[str, Any]) -> str:
    """The evaluated checkpoints (system, learner, file name, SHA-256 prefix) and the seeds."""
    items = [f"<li>{_e(c['system'])}: {_e(c['learner'])}, <code>{_e(PurePath(c['path']).name)}</code>"
             f" (sha256 {_e(c['sha256'][:12])}); {_e(format_cost(c.get('training_cost')))}</li>"
             for c in results.get("checkpoints", [])]
    seeds = f"seed {_e(str(results.get('seed')))}, split seed {_e(str(results.get('split_seed')))}"
    return "<ul>" + "".join(items) + f"</ul>\n<p class=\"note\">{seeds}; every value is in results.json.</p>"


def _cell(rows: Iterable[dict[str, Any]], system: str, shots: int, steps: int, metric: str) -> str:
    """A results-table ``<td>``: the cell's mean ± CI, or a dash when the grid lacks it."""
    row = next((r for r in rows if r["system"] == system and r["shots"] == shots and r["steps"] == steps), None)
    return f'<td class="num">{_e(format_mean_ci(row["metrics"][metric])) if row else "&mdash;"}</td>'


def _e(text: str) -> str:
    """HTML-escaped text (quotes too, so it is safe in attributes)."""
    return html.escape(str(text), quote=True)


def _url(path: str) -> str:
    """A relative path as an escaped URL attribute value (percent-encoded; '/' kept)."""
    return _e(quote(str(path)))
