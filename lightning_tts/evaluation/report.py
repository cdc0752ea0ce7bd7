"""Evaluation results as files: ``results.json``, ``results.csv``, ``results.md``, ``adaptation_curves.png`` and the
listening page ``report.html`` (``listening.py``; its audio is written during the grid, by ``samples.py``)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning_tts.atomic import write_json, write_text
from lightning_tts.evaluation.listening import listening_html
from lightning_tts.evaluation.scoring import LOWER_IS_BETTER, METRICS
from lightning_tts.evaluation.stats import format_cost, format_mean_ci, format_rate
from lightning_tts.plots import adaptation_curves_figure, save_figure

CURVES_FILE = "adaptation_curves.png"
REPORT_FILES = ("results.json", "results.csv", "results.md", CURVES_FILE, "report.html")
#: The reference row a clone's word error rate is read against: the speaker's own recording through the
#: same vocoder, i.e. what an exact clone would sound like in this evaluation.
CEILING = "vocoder ceiling"


def write_report(results: dict[str, Any], out: Path) -> list[Path]:
    """Write every report file of ``results`` into ``out`` (atomically); returns their paths."""
    write_json(out / "results.json", results)
    write_text(out / "results.csv", results_csv(results["rows"]))
    write_text(out / "results.md", results_markdown(results))
    save_figure(adaptation_curves_figure(results, results_metrics(results), LOWER_IS_BETTER),
                out / CURVES_FILE)
    write_text(out / "report.html", listening_html(results, results.get("samples", []), results_metrics(results),
                                                       images=(CURVES_FILE,)))
    return [out / name for name in REPORT_FILES]


def results_csv(rows: list[dict[str, Any]]) -> str:
    """One line per (system, shots, steps, metric)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["system", "shots", "steps", "metric", "mean", "ci95", "n", "failures"])
    for row in rows:
        for metric, cell in row["metrics"].items():
            writer.writerow([row["system"], row["shots"], row["steps"], metric, f"{cell['mean']:.4f}",
                             f"{cell['ci95']:.4f}", cell["n"], cell["failures"]])
    return buf.getvalue()


def results_markdown(results: dict[str, Any]) -> str:
    """One table per metric: rows = (shots, steps), columns = systems; mean ± 95 % CI."""
    rows = results["rows"]
    systems = list(dict.fromkeys(r["system"] for r in rows if r["shots"] is not None))
    refs = [r for r in rows if r["shots"] is None]
    lines = [f"# Few-shot evaluation: {len(results['speakers'])} {results.get('split', 'test')} speakers, "
             f"{len(next(iter(results['speakers'].values()))['query'])} query utterances each", ""]
    lines += [f"- {c['system']}: {format_cost(c.get('training_cost'))}; adaptation rate {format_rate(c.get('adapt_lr'))}"
              for c in results.get("checkpoints", [])] + [""]
    for metric in results_metrics(results):
        arrow = "lower is better" if LOWER_IS_BETTER[metric] else "higher is better"
        lines += [f"## {metric} ({arrow})", "", "| shots | steps | " + " | ".join(systems) + " |",
                  "|---|---|" + "---|" * len(systems)]
        for k in results["shots"]:
            for n in results["steps"]:
                cells = []
                for system in systems:
                    cell = next(r for r in rows if r["system"] == system and r["shots"] == k and r["steps"] == n)
                    cells.append(format_mean_ci(cell["metrics"][metric]))
                lines.append(f"| {k} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"{r['system']}: {format_mean_ci(r['metrics'][metric])}  " for r in refs] + [""]
    lines += differences_markdown(results.get("differences") or [])
    return "\n".join(lines + intelligibility_markdown(results.get("intelligibility") or []))


def differences_markdown(differences: list[dict[str, Any]]) -> list[str]:
    """The paired differences (``grid.paired_differences`` entries, one reference) as a table: one line per
    (system, K, steps, metric); nothing when there are none."""
    if not differences:
        return []
    return [f"## Paired differences against {differences[0]['against']} (speaker-clustered bootstrap 95 % CI)",
            "", "| system | shots | steps | metric | mean difference | 95 % CI |", "|---|---|---|---|---|---|",
            *[f"| {d['system']} | {d['shots']} | {d['steps']} | {d['metric']} | {d['mean']:+.3f} | "
              f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] |" for d in differences], ""]


def intelligibility_markdown(entries: list[dict[str, Any]]) -> list[str]:
    """The ``intelligibility`` entries of a results file as a table: each adapted cell's WER minus the
    same system unadapted (the rise) and minus the vocoder ceiling (the speaker's own voice); none: no lines."""
    if not entries:
        return []
    cells = list(dict.fromkeys((e["system"], e["shots"], e["steps"]) for e in entries))
    lines = ["## Word error rate: rise with adaptation, and against the speaker's own voice (paired, speaker-clustered "
             "bootstrap 95 % CI)", "",
             "A faithful clone scores about 0 against the vocoder ceiling (the recordings through the same vocoder); "
             "its rise over the unadapted voice includes how much harder the recogniser finds the real speakers.", "",
             "| system | shots | steps | minus 0 steps | minus vocoder ceiling |", "|---|---|---|---|---|"]
    for cell in cells:
        found = {e["against"]: e for e in entries if (e["system"], e["shots"], e["steps"]) == cell}
        shown = [f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d else "-"
                 for d in (found.get("0 steps"), found.get(CEILING))]
        lines.append(f"| {cell[0]} | {cell[1]} | {cell[2]} | " + " | ".join(shown) + " |")
    return lines + [""]


def results_metrics(results: dict[str, Any]) -> list[str]:
    """The metrics a results file holds (files older than speaker similarity lack the key)."""
    return list(results.get("metrics", [m for m in METRICS if m in results["rows"][0]["metrics"]]))
