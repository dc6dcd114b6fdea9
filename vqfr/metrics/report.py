"""Write an :class:`~vqfr.metrics.evaluation.Evaluation` as a console table, CSV, JSON and an HTML page.

The HTML page is self-contained (thumbnails are embedded) and shows LQ | restored | GT for the
worst and best images by one metric, so a number can be checked by eye.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from pathlib import Path

import cv2

from vqfr.metrics.evaluation import Evaluation, read_bgr_uint8
from vqfr.metrics.table import METRICS, digits
from vqfr.utils.atomic import atomic_write_text


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return ""
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits(metric)}f}"


def _columns(ev: Evaluation) -> list[str]:
    cols = []
    for m in ev.metrics:
        if not METRICS[m].per_image or m in ev.unavailable:
            continue
        cols.append(m)
        cols += [x for x, _ in METRICS[m].extra if any(x in r.values for r in ev.results)]
    return cols


def summary(ev: Evaluation) -> dict[str, dict]:
    """Per-metric summary: mean (or the FID value), image count, direction, or the n/a reason."""
    out = {}
    for m in ev.metrics:
        metric = METRICS[m]
        unit = metric.unit
        if metric.conventions:
            unit = ", ".join(x for x in (unit, *_fr_conventions(ev.settings)) if x)
        entry = {"better": metric.better, "unit": unit}
        if m in ev.unavailable:
            entry["status"] = ev.unavailable[m]
        else:
            entry["mean"] = ev.mean(m)
            entry["images"] = len(ev.values(m)) if metric.per_image else len(ev.results)
            if not metric.per_image:  # FID: which statistics it compared with
                entry["reference"] = ev.fid_reference
            entry["status"] = "ok"
        out[m] = entry
    return out


def _fr_conventions(settings: dict) -> list[str]:
    """How PSNR/SSIM were taken, for the table's note column."""
    notes = ["Y channel" if settings.get("test_y_channel") else "BGR channels"]
    if settings.get("correct_mean_var"):
        notes.append("mean/var corrected")
    if settings.get("crop_border"):
        notes.append(f"crop {settings['crop_border']}")
    return notes


def format_table(ev: Evaluation) -> str:
    """The console table: one line per metric with its mean (or why it is not available)."""
    lines = [f"{'metric':<10} {'mean':>12} {'images':>7}  note"]
    for m, entry in summary(ev).items():
        if entry["status"] != "ok":
            lines.append(f"{m:<10} {entry['status']}")
            continue
        note = ", ".join(x for x in (entry["unit"], f"{entry['better']} is better") if x)
        if entry.get("reference"):
            note += f", vs {entry['reference']}"
        lines.append(f"{m:<10} {_fmt(entry['mean'], m):>12} {entry['images']:>7}  {note}")
    lines.append(f"{len(ev.results)} image(s) evaluated, {len(ev.problems)} skipped")
    return "\n".join(lines)


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return value


def write_json(ev: Evaluation, path: str | os.PathLike) -> None:
    data = {
        "settings": ev.settings,
        "summary": {m: {k: _json_number(v) for k, v in e.items()} for m, e in summary(ev).items()},
        "images": [
            {
                "name": r.pair.name,
                "restored": str(r.pair.restored),
                "gt": str(r.pair.gt) if r.pair.gt else None,
                **{k: _json_number(v) for k, v in r.values.items()},
                **({"warnings": r.warnings} if r.warnings else {}),
            }
            for r in ev.results
        ],
        "problems": [{"name": n, "error": e} for n, e in ev.problems],
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_csv(ev: Evaluation, path: str | os.PathLike) -> None:
    cols = _columns(ev)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "restored", "gt", *cols, "error"])
    rows = [(r.pair.name, r) for r in ev.results] + [(n, None) for n, _ in ev.problems]
    errors = dict(ev.problems)
    for name, r in sorted(rows, key=lambda x: x[0]):
        if r is None:
            writer.writerow([name, "", "", *[""] * len(cols), errors[name]])
        else:
            values = [_fmt(r.values.get(c), c) for c in cols]
            writer.writerow([name, r.pair.restored, r.pair.gt or "", *values, "; ".join(r.warnings)])
    atomic_write_text(path, buffer.getvalue())


def ranking_metric(ev: Evaluation, requested: str | None = None) -> str | None:
    """The per-image metric that orders the HTML report (``requested`` if computed, else a default)."""
    available = [c for c in _columns(ev) if c in METRICS]
    if requested in available:
        return requested
    ranked = sorted((METRICS[m].rank, m) for m in available if METRICS[m].rank is not None)
    return ranked[0][1] if ranked else None


def _thumb(path: Path | None, size: int = 192) -> str:
    """An <img> tag with an embedded JPEG thumbnail, or a placeholder when there is no image."""
    if path is None:
        return '<div class="none">none</div>'
    try:
        img = read_bgr_uint8(path)
    except Exception:
        return '<div class="none">unreadable</div>'
    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        return '<div class="none">unreadable</div>'
    data = base64.b64encode(buf.tobytes()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" title="{html.escape(str(path))}">'


def write_html(ev: Evaluation, path: str | os.PathLike, sort_by: str | None = None, cases: int = 5) -> None:
    """HTML report: the summary table, then LQ | restored | GT rows for the worst and best images."""
    esc = html.escape
    metric = ranking_metric(ev, sort_by)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>vqfr evaluate</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        "img{display:block;width:192px}.none{width:192px;height:60px;color:#999}",
        "</style></head><body><h1>vqfr evaluate</h1><h2>Summary</h2><table>",
        "<tr><th>metric</th><th>mean</th><th>images</th><th>note</th></tr>",
    ]
    for m, e in summary(ev).items():
        if e["status"] == "ok":
            note = ", ".join(x for x in (e["unit"], f"{e['better']} is better", e.get("reference") or "") if x)
            parts.append(
                f"<tr><td>{m}</td><td>{_fmt(e['mean'], m)}</td><td>{e['images']}</td><td>{esc(note)}</td></tr>"
            )
        else:
            parts.append(f"<tr><td>{m}</td><td colspan=3>{esc(e['status'])}</td></tr>")
    parts.append("</table>")
    parts.append(f"<p>{len(ev.results)} image(s) evaluated, {len(ev.problems)} skipped.</p>")

    if metric is not None:
        scored = sorted((r for r in ev.results if metric in r.values), key=lambda r: r.values[metric])
        if not METRICS[metric].lower_is_better:
            scored.reverse()  # best first
        n = min(cases, (len(scored) + 1) // 2) if len(scored) > 1 else len(scored)
        groups = [("Best", scored[:n]), ("Worst", list(reversed(scored))[:n])] if len(scored) > 1 else [("All", scored)]
        cols = _columns(ev)
        for title, rows in groups:
            parts.append(f"<h2>{title} {len(rows)} by {metric}</h2><table>")
            parts.append("<tr><th>image</th><th>LQ</th><th>restored</th><th>GT</th><th>metrics</th></tr>")
            for r in rows:
                vals = "<br>".join(f"{c}: {_fmt(r.values.get(c), c)}" for c in cols if c in r.values)
                parts.append(
                    f"<tr><td>{esc(r.pair.name)}</td><td>{_thumb(r.pair.lq)}</td><td>{_thumb(r.pair.restored)}</td>"
                    f"<td>{_thumb(r.pair.gt)}</td><td>{vals}</td></tr>"
                )
            parts.append("</table>")
    if ev.problems:
        parts.append("<h2>Skipped</h2><ul>")
        parts += [f"<li>{esc(n)}: {esc(e)}</li>" for n, e in ev.problems]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    atomic_write_text(path, "\n".join(parts))


def write_reports(ev: Evaluation, out_dir: str | os.PathLike, sort_by: str | None = None, cases: int = 5) -> dict:
    """Write metrics.csv, metrics.json and report.html into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    paths = {"csv": out_dir / "metrics.csv", "json": out_dir / "metrics.json", "html": out_dir / "report.html"}
    write_csv(ev, paths["csv"])
    write_json(ev, paths["json"])
    write_html(ev, paths["html"], sort_by=sort_by, cases=cases)
    return paths


__all__ = ["format_table", "summary", "write_csv", "write_html", "write_json", "write_reports"]
