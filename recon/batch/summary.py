"""The summary of a `recon batch` run: one row per scan, the means, the failures, the workers;
written as summary.json, summary.md and failures.json (atomically) and printed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from recon.outputs import atomic_write, save_json

__all__ = [
    "WARNINGS_FILE", "metrics_row", "summarize", "write_summary", "markdown_table", "exit_status"
]  # fmt: skip

# what a scan's row keeps of its metrics.json (a finished scan read back, or a worker's result)
SUMMARY_KEYS = (
    "psnr", "ssim", "nmse", "iterations", "seconds", "converged", "stop_reason", "unusable"
)  # fmt: skip
COLUMNS = ("psnr", "ssim", "iterations", "seconds", "stop_reason")
# in a finished scan's folder: what it warned about (``{"warnings": [...]}``, the worker's
# ``warning_texts``), so a rerun that skips it keeps them in its summary
WARNINGS_FILE = ".batch-warnings.json"


def metrics_row(name: str, out: str | Path, status: str) -> dict[str, Any]:
    """A summary row for a finished unit, read back from its metrics.json (and the warnings its
    run recorded in ``WARNINGS_FILE``)."""
    path = Path(out) / "metrics.json"
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        error = f"{path}: unreadable ({exc}); delete it to recompute the scan"
        return {"name": name, "out": str(out), "status": "failed", "error": error, "metrics": {}}
    metrics = {k: m.get(k) for k in SUMMARY_KEYS}
    row = {"name": name, "out": str(out), "status": status, "metrics": metrics}
    try:
        said = json.loads((Path(out) / WARNINGS_FILE).read_text()).get("warnings")
    except (OSError, json.JSONDecodeError, AttributeError):
        said = None  # none recorded (or a scan finished before they were kept)
    if isinstance(said, list) and said:
        row["warnings"] = [str(text) for text in said]
    return row


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r["metrics"].get(key) for r in rows if r["status"] != "failed"]
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def summarize(rows: list[dict], workers: dict[int, dict], run: dict[str, Any]) -> dict[str, Any]:
    """The summary.json content: rows (input order), means over finished scans, counts."""
    ok = [r for r in rows if r["status"] != "failed"]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed")}
    return {
        **run,
        "counts": {**counts, "total": len(rows)},
        # scans whose image a solver left diverged or far from the data (recon ct/mri exit 3)
        "unusable": [r["name"] for r in ok if (r.get("metrics") or {}).get("unusable")],
        "mean": {k: _mean(ok, k) for k in ("psnr", "ssim", "iterations", "seconds")},
        "scans": rows,
        "workers": sorted(workers.values(), key=lambda w: (w["host"], w["pid"])),
    }


def exit_status(summary: dict[str, Any]) -> int:
    """`recon batch`'s exit status: 1 when a scan failed, else 3 when an image is unusable (the
    status `recon ct` / `recon mri` give that scan, recon.pipeline.EXIT_UNUSABLE), else 0."""
    if summary["counts"]["failed"]:
        return 1
    return 3 if summary.get("unusable") else 0


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else str(v)
    return str(v)


def markdown_table(summary: dict[str, Any]) -> str:
    """Per-scan metrics, the mean, the failures and the workers as a Markdown document."""
    lines = [
        f"# recon batch {summary['modality']}: {summary['counts']['total']} scans",
        "",
        f"{summary['counts']['done']} reconstructed in this run, "
        f"{summary['counts']['skipped']} already finished, "
        f"{summary['counts']['failed']} failed"
        + (f", {len(summary['unusable'])} unusable" if summary.get("unusable") else "")
        + f"; wall time {summary['wall_seconds']:.1f} s"
        + (
            f", {summary['slices_per_minute']:.2f} slices/minute"
            if summary.get("slices_per_minute")
            else ""
        )
        + ".",
        "",
        "| scan | status | PSNR (dB) | SSIM | iterations | seconds | stop reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["scans"]:
        m = r.get("metrics") or {}
        lines.append(
            f"| {r['name']} | {r['status']} | {_fmt(m.get('psnr'))} | {_fmt(m.get('ssim'), 4)} "
            f"| {_fmt(m.get('iterations'))} | {_fmt(m.get('seconds'), 1)} "
            f"| {_fmt(m.get('stop_reason'))} |"
        )
    mean = summary["mean"]
    lines.append(
        f"| **mean** | | {_fmt(mean['psnr'])} | {_fmt(mean['ssim'], 4)} "
        f"| {_fmt(mean['iterations'], 1)} | {_fmt(mean['seconds'], 1)} | |"
    )
    if summary.get("unusable"):
        lines += ["", "## Unusable images (written, but diverged or far from the data)", ""]
        lines += [
            f"- {r['name']}: {r['metrics']['unusable']}"
            for r in summary["scans"]
            if (r.get("metrics") or {}).get("unusable")
        ]
    warned = [r for r in summary["scans"] if r.get("warnings")]
    if warned:
        lines += ["", "## Warnings", ""]
        lines += [f"- {r['name']}: {text}" for r in warned for text in r["warnings"]]
    failed = [r for r in summary["scans"] if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- {r['name']}: {r.get('error', '?')}" for r in failed]
    if summary["workers"]:
        lines += [
            "",
            "## Workers (this run)",
            "",
            "| host | pid | scans | prior loads | peak RSS (MB) |",
        ]
        lines.append("|---|---|---|---|---|")
        for w in summary["workers"]:
            lines.append(
                f"| {w['host']} | {w['pid']} | {w['units']} | {w['prior_loads']} "
                f"| {w['peak_rss_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def write_summary(out: Path, summary: dict[str, Any]) -> str:
    """Write summary.json, summary.md and failures.json into ``out``; return the Markdown."""
    failures = [
        {k: r.get(k) for k in ("name", "input", "out", "error", "warnings", "traceback") if k in r}
        for r in summary["scans"]
        if r["status"] == "failed"
    ]
    save_json(out / "failures.json", failures)
    save_json(out / "summary.json", summary)
    text = markdown_table(summary)
    atomic_write(out / "summary.md", lambda tmp: tmp.write_text(text))
    return text
