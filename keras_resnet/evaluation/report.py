"""The evaluation report: a readable terminal table and the JSON file.

The report is a plain dict (see ``metrics.classification_metrics``) with, for several models,
``models`` (each member's own report) and the headline figures being the ensemble's.
"""
from __future__ import annotations

import json
from pathlib import Path

from keras_resnet.evaluation.io import write_text

MATRIX_UP_TO = 12  # classes; a larger confusion matrix goes to the PNG only


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def summary_rows(report: dict) -> list[dict]:
    """One row per model (and the ensemble) with the headline figures."""
    members = report.get("models") or []
    rows = [dict(m, name=m.get("model", "?")) for m in members]
    rows.append(dict(report, name=report.get("model", "model")))
    return rows


def format_summary(report: dict) -> str:
    rows = summary_rows(report)
    width = max(12, *(len(str(r["name"])) for r in rows))
    header = (f"{'model':<{width}}  {'loss':>8}  {'top-1':>7}  {'top-5':>7}  "
              f"{'macro F1':>8}  {'weighted F1':>11}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{str(r['name']):<{width}}  {r['loss']:>8.4f}  {_percent(r['accuracy']):>7}  "
                     f"{_percent(r['top5_accuracy']):>7}  {r['macro_f1']:>8.4f}  "
                     f"{r['weighted_f1']:>11.4f}")
    return "\n".join(lines)


def format_per_class(report: dict) -> str:
    names = report["classes"]
    width = max(12, *(len(n) for n in names))
    header = f"{'class':<{width}}  {'precision':>9}  {'recall':>7}  {'f1':>7}  {'support':>7}"
    lines = [header, "-" * len(header)]
    for name in names:
        c = report["per_class"][name]
        lines.append(f"{name:<{width}}  {c['precision']:>9.4f}  {c['recall']:>7.4f}  "
                     f"{c['f1']:>7.4f}  {c['support']:>7d}")
    lines.append("-" * len(header))
    total = report["num_images"]
    for label, key in (("macro avg", "macro"), ("weighted avg", "weighted")):
        lines.append(f"{label:<{width}}  {report[key + '_precision']:>9.4f}  "
                     f"{report[key + '_recall']:>7.4f}  {report[key + '_f1']:>7.4f}  {total:>7d}")
    return "\n".join(lines)


def format_confusion(report: dict) -> str:
    names = report["classes"]
    matrix = report["confusion_matrix"]
    cell = max(5, *(len(str(v)) for row in matrix for v in row)) + 1
    short = [n[:cell - 1] for n in names]
    corner = "true \\ predicted"
    width = max(len(corner), *(len(n) for n in names))
    lines = [f"{corner:<{width}}" + "".join(f"{s:>{cell}}" for s in short)]
    for name, row in zip(names, matrix):
        lines.append(f"{name:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """The whole report as text for the terminal."""
    context = [f"data {report['data']}" if report.get("data") else None,
               f"split {report['split']}" if report.get("split") else None,
               f"{report['num_images']} images",
               f"tta {report['tta']}" if report.get("tta") else None]
    members = report.get("models") or []
    headline = (f"ensemble of {len(members)} models (mean of probabilities)" if members
                else str(report.get("model", "model")))
    parts = [f"Evaluation: {headline}", "  " + ", ".join(c for c in context if c), "",
             format_summary(report), "", f"Per class ({'ensemble' if members else 'model'}):",
             format_per_class(report)]
    if len(report["classes"]) <= MATRIX_UP_TO:
        parts += ["", "Confusion matrix (rows: true class, columns: predicted):",
                  format_confusion(report)]
    for note in report.get("notes", []):
        parts += ["", f"Note: {note}"]
    return "\n".join(parts)


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2) + "\n"


def write_report(report: dict, path) -> Path:
    """Write ``report`` as JSON to ``path``, whole or not at all."""
    return write_text(path, to_json(report))
