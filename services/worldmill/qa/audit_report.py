"""An :class:`~worldmill.qa.audit.Audit` as JSON (stable keys) and as one self-contained HTML page.

The JSON is :func:`report` dumped: the same keys in the same order every time, values JSON types
only, no images (the HTML carries them). The HTML has the totals, the failures by check, the
identical and near-identical groups, the missing variants, then a table per file with its three
screenshots embedded as base64 JPEG (no external file, script or stylesheet); failed findings are
highlighted and every piece of text, file names included, is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from worldmill.contracts.qa import Finding, Severity, Value
from worldmill.qa.audit import SCREENSHOT_LABELS, Audit, FileResult, Group, Missing, Target

__all__ = ["REPORT_FORMAT", "render_html", "render_json", "report", "write_html", "write_json"]

#: Bumped when a key of :func:`report` changes meaning or disappears.
REPORT_FORMAT = 1
#: Within-file structure findings listed in their own HTML section (loop: time ranges; cuts: timestamps).
_STRUCTURE_CHECKS = ("loop", "cuts")


def _finding(f: Finding) -> dict[str, Any]:
    return {
        "check": f.check,
        "passed": f.passed,
        "severity": f.severity.value,
        "measured": f.measured,
        "expected": f.expected,
        "message": f.message,
    }


def _target(t: Target | None) -> dict[str, Any] | None:
    if t is None:
        return None
    e = t.expectation
    return {
        "source": t.source,
        "prompt_id": t.prompt_id,
        "scenario": t.scenario,
        "duration_s": t.duration_s,
        "variant": t.variant,
        "frames": e.frames,
        "fps": e.fps,
        "width": e.width,
        "height": e.height,
        "codec": e.codec,
        "container": e.container,
    }


def _file(r: FileResult) -> dict[str, Any]:
    return {
        "name": r.name,
        "passed": r.passed,
        "failed_checks": sorted({f.check for f in r.findings if not f.passed and f.severity is Severity.ERROR}),
        "size": r.size,
        "sha256": r.sha256,
        "status": r.status,
        "decode_error": r.decode_error,
        "measured": {
            "frames": r.frames,
            "fps": r.fps,
            "duration_s": r.duration_s,
            "width": r.width,
            "height": r.height,
            "codec": r.codec,
            "container": r.container,
        },
        "expected": _target(r.target),
        "findings": [_finding(f) for f in r.findings],
        "screenshots": [label for label in SCREENSHOT_LABELS if label in r.screenshots],
        "seconds": r.seconds,
        "fingerprint": r.fingerprint.to_json() if r.fingerprint is not None else None,
    }


def _group(g: Group) -> dict[str, Any]:
    return {"files": list(g.files), "sha256": g.sha256, "scenario": g.scenario}


def _missing(m: Missing) -> dict[str, Any]:
    return {
        "scenario": m.scenario,
        "duration_s": m.duration_s,
        "variant": m.variant,
        "expected_name": m.expected_name,
        "prompt_id": m.prompt_id,
        "reason": m.reason,
    }


def report(audit: Audit) -> dict[str, Any]:
    """The audit as a plain dict with stable keys (what ``--json`` writes)."""
    files = len(audit.files)
    return {
        "format": REPORT_FORMAT,
        "source": audit.source,
        "manifest": audit.manifest,
        "fps": audit.fps,
        "started_at": audit.started_at.isoformat(),
        "elapsed_s": audit.elapsed_s,
        "ok": audit.ok,
        "totals": {
            "files": files,
            "passed": len(audit.passed_files),
            "failed": len(audit.failed_files),
            "missing": len(audit.missing),
            "identical_groups": len(audit.identical),
            "near_identical_groups": len(audit.near_identical),
            "no_expectation": sum(1 for r in audit.files if r.target is None),
            "bytes": sum(r.size for r in audit.files),
            "files_per_s": round(files / audit.elapsed_s, 2) if audit.elapsed_s > 0 else None,
        },
        "failures_by_check": audit.failures_by_check(Severity.ERROR),
        "warnings_by_check": audit.failures_by_check(Severity.WARNING),
        "identical": [_group(g) for g in audit.identical],
        "near_identical": [_group(g) for g in audit.near_identical],
        "missing": [_missing(m) for m in audit.missing],
        "files": [_file(r) for r in audit.files],
    }


def render_json(audit: Audit) -> str:
    """:func:`report` as indented JSON text."""
    return json.dumps(report(audit), indent=2, ensure_ascii=False) + "\n"


def write_json(audit: Audit, path: Path) -> None:
    """Write :func:`render_json` to ``path``."""
    path.write_text(render_json(audit), encoding="utf-8")


# -- HTML --------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
section.file { border: 1px solid #ddd; border-left: 6px solid #2e7d32; padding: 0.5em 1em; margin: 1em 0; }
section.file.failed { border-left-color: #c62828; }
.verdict { font-weight: bold; padding: 1px 6px; border-radius: 3px; color: #fff; background: #2e7d32; }
.failed .verdict, .verdict.failed { background: #c62828; }
tr.fail-error td { background: #ffebee; }
tr.fail-warning td { background: #fff8e1; }
tr.fail-info td { background: #e3f2fd; }
figure { display: inline-block; margin: 0 8px 0 0; }
figcaption { font-size: 12px; color: #555; }
code { font-size: 12px; }
"""


def _e(value: object) -> str:
    """Any value as escaped text (``None`` as an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def _value(value: Value) -> str:
    if isinstance(value, list):
        return _e(", ".join(str(v) for v in value))
    return _e(value)


def _table(headers: list[str], rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    """A table from already-escaped cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary(audit: Audit) -> str:
    data = report(audit)
    totals = data["totals"]
    verdict = "passed" if audit.ok else "failed"
    if audit.manifest:
        origin = f"the manifest {audit.manifest}"
    else:
        origin = f"file names at {audit.fps:g} fps" if audit.fps else "file names"
    parts = [
        f"<h1>Video audit of <code>{_e(audit.source)}</code></h1>",
        f'<p><span class="verdict {verdict}">{verdict}</span> '
        f"{_e(totals['files'])} file(s): {_e(totals['passed'])} passed, {_e(totals['failed'])} failed, "
        f"{_e(totals['missing'])} missing; {_e(totals['identical_groups'])} identical group(s), "
        f"{_e(totals['near_identical_groups'])} near-identical group(s); "
        f"expectations from {_e(origin)}; "
        f"started {_e(data['started_at'])}, {_e(audit.elapsed_s)} s.</p>",
    ]
    failures = data["failures_by_check"]
    if failures:
        parts.append("<h2>Failures by check</h2>")
        parts.append(_table(["check", "files"], [[_e(k), _e(v)] for k, v in failures.items()]))
    warnings = data["warnings_by_check"]
    if warnings:
        parts.append("<h2>Warnings by check</h2>")
        parts.append(_table(["check", "files"], [[_e(k), _e(v)] for k, v in warnings.items()]))
    if audit.identical:
        parts.append("<h2>Byte-identical files</h2>")
        parts.append(
            _table(
                ["sha256", "files"],
                [[f"<code>{_e((g.sha256 or '')[:16])}…</code>", _e(", ".join(g.files))] for g in audit.identical],
            )
        )
    if audit.near_identical:
        parts.append("<h2>Near-identical siblings</h2>")
        parts.append(
            _table(["scenario", "files"], [[_e(g.scenario), _e(", ".join(g.files))] for g in audit.near_identical])
        )
    structure = [(r.name, f) for r in audit.files for f in r.findings if f.check in _STRUCTURE_CHECKS and not f.passed]
    if structure:
        parts.append("<h2>Loops and cuts</h2>")
        parts.append(
            _table(
                ["file", "check", "time ranges / timestamps (s)", "what"],
                [[_e(name), _e(f.check), _value(f.measured), _e(f.message)] for name, f in structure],
            )
        )
    if audit.missing:
        parts.append("<h2>Missing variants</h2>")
        parts.append(
            _table(
                ["expected file", "scenario", "duration", "variant", "prompt id", "why expected"],
                [
                    [
                        _e(m.expected_name),
                        _e(m.scenario),
                        _e(f"{m.duration_s:g} s"),
                        _e(m.variant),
                        _e(m.prompt_id),
                        _e(m.reason),
                    ]
                    for m in audit.missing
                ],
            )
        )
    return "\n".join(parts)


def _file_section(r: FileResult) -> str:
    status = "passed" if r.passed else "failed"
    shots = "".join(
        f'<figure><img alt="{_e(label)} screenshot of {_e(r.name)}" '
        f'src="data:image/jpeg;base64,{base64.b64encode(r.screenshots[label]).decode("ascii")}">'
        f"<figcaption>{_e(label)}</figcaption></figure>"
        for label in SCREENSHOT_LABELS
        if label in r.screenshots
    )
    fps = f"{r.fps:g} fps" if r.fps is not None else "? fps"
    measured = (
        f"{_e(r.frames)} frames, {_e(fps)}, {_e(f'{r.duration_s:.2f}')} s, {_e(r.width)}x{_e(r.height)}, "
        f"{_e(r.codec or '?')} in {_e(r.container or '?')}, {_e(r.size)} bytes, sha256 <code>{_e(r.sha256[:16])}</code>"
    )
    t = r.target
    expected = (
        f"{_e(t.scenario)} {_e(f'{t.duration_s:g}')} s v{_e(t.variant)} (from the {_e(t.source)}"
        + (f", prompt {_e(t.prompt_id)}" if t.prompt_id else "")
        + ")"
        if t
        else "no expectation"
    )
    rows = [
        [
            _e(f.check),
            "passed" if f.passed else f"<strong>failed</strong> ({_e(f.severity.value)})",
            _value(f.measured),
            _value(f.expected),
            _e(f.message),
        ]
        for f in r.findings
    ]
    classes = ["" if f.passed else f"fail-{f.severity.value}" for f in r.findings]
    return (
        f'<section class="file {status}"><h3><span class="verdict">{status}</span> {_e(r.name)}</h3>'
        f"<p>measured: {measured}<br>expected: {expected}</p>"
        f"<div>{shots or '<em>no screenshot (nothing decoded)</em>'}</div>"
        + _table(["check", "result", "measured", "expected", "message"], rows, classes)
        + "</section>"
    )


def render_html(audit: Audit) -> str:
    """One self-contained HTML page (inline CSS, screenshots as data URLs), every text escaped."""
    ordered = sorted(audit.files, key=lambda r: (r.passed, r.name))  # failures first
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>Video audit of {_e(audit.source)}</title><style>{_CSS}</style></head><body>\n"
        + _summary(audit)
        + "\n<h2>Files</h2>\n"
        + "\n".join(_file_section(r) for r in ordered)
        + "\n</body></html>\n"
    )


def write_html(audit: Audit, path: Path) -> None:
    """Write :func:`render_html` to ``path``."""
    path.write_text(render_html(audit), encoding="utf-8")
