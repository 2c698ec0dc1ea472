"""Building QA findings and deciding a verdict from them.

A :class:`~worldmill.contracts.qa.Finding` says what one check measured and what it expected. The
verdict rule is the contract's: any failed finding of severity ``error`` fails the video; failed
warnings and infos are reported but do not. :func:`jpeg` encodes the evidence a verdict carries
(screenshots, contact sheet).
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
from PIL import Image

from worldmill.contracts.qa import Finding, Severity, Value


def finding(
    check: str,
    passed: bool,
    severity: Severity,
    *,
    measured: Value = None,
    expected: Value = None,
    message: str = "",
) -> Finding:
    """One finding; ``severity`` is how much the check matters when it fails (kept when it passes)."""
    return Finding(check=check, passed=passed, severity=severity, measured=measured, expected=expected, message=message)


def failures(findings: Iterable[Finding], severity: Severity | None = None) -> list[Finding]:
    """The findings that did not pass, optionally only those of ``severity``."""
    return [f for f in findings if not f.passed and (severity is None or f.severity is severity)]


def passed(findings: Iterable[Finding]) -> bool:
    """The verdict: ``True`` unless a finding of severity ``error`` failed (warnings are allowed)."""
    return not failures(findings, Severity.ERROR)


def summary(findings: Iterable[Finding]) -> str:
    """One line for logs and reports: ``"passed"`` or the failed checks with their messages, errors first."""
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    failed = sorted(failures(findings), key=lambda f: order[f.severity])
    if not failed:
        return "passed"
    verdict = "failed" if any(f.severity is Severity.ERROR for f in failed) else "passed with warnings"
    return verdict + ": " + "; ".join(f"{f.check} ({f.severity.value}): {f.message}" for f in failed)


def jpeg(image: npt.NDArray[np.uint8], quality: int = 90) -> bytes:
    """An RGB ``(height, width, 3)`` or gray ``(height, width)`` uint8 image as JPEG bytes."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(out, format="JPEG", quality=quality)
    return out.getvalue()
