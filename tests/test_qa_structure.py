"""Issue #15 part A: the fingerprint (pHash every 0.25 s) and the within-video checks ``loop`` and ``cuts``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import qa_corpus
from tests.helpers.qa_corpus import Item
from worldmill.contracts.qa import Finding, Severity
from worldmill.gpu_runner.backends import SyntheticBackend
from worldmill.gpu_runner.backends.base import ChunkRequest
from worldmill.qa.audit import Auditor, Expectations
from worldmill.qa.audit_report import render_html, report
from worldmill.qa.criteria import Expectation
from worldmill.qa.findings import passed
from worldmill.qa.fingerprint import Fingerprint, hamming, phash, sample_indices, sample_times
from worldmill.qa.judge import check
from worldmill.qa.measure import Analysis, analyze


def _named(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Item, Analysis]]:
    items = qa_corpus.build(tmp_path_factory.mktemp("corpus"), small=True, kinds=("structure",))
    return {it.name: (it, analyze(it.path)) for it in items}


# -- fingerprint -------------------------------------------------------------------------------


def _frame(seed: int) -> np.ndarray:
    return next(qa_corpus.scene(seed, 1, width=320, height=192))


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)


def test_phash_survives_rescaling_cropping_and_lossy_coding() -> None:
    """Half size, a 2 % crop of each side and a JPEG at quality 30 stay within 10 bits; unrelated frames ≥ 20."""
    image = _frame(7)
    base = phash(_gray(image))
    half = np.asarray(Image.fromarray(image).resize((160, 96), Image.Resampling.BILINEAR))
    crop = image[4:-4, 6:-6]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=30)
    lossy = np.asarray(Image.open(buffer))
    for variant in (half, crop, lossy):
        assert hamming(base, phash(_gray(variant))) <= 10
    assert 0 <= base < 1 << 64
    for seed in (8, 9, 10):
        assert hamming(base, phash(_gray(_frame(seed)))) >= 20


def test_phash_ignores_gain_and_offset() -> None:
    """Limited- or full-range luma and a brighter copy give the same bits (the DC term is not compared)."""
    gray = _gray(_frame(3)).astype(np.float32)
    assert phash(gray) == phash(gray * 219 / 255 + 16) == phash(gray * 0.8 + 30)


def test_sampling_rule_is_by_timestamp() -> None:
    """4 samples a second, each the frame shown at k / 4 s: 20 for 5 s at 24 fps, 40 for 10 s."""
    assert len(sample_times(5.0)) == 20 and len(sample_times(10.0)) == 40
    times = np.arange(120) / 24
    assert sample_indices(times, 5.0) == list(range(0, 120, 6))
    times30 = np.arange(90) / 30  # 0.25 s falls between frames 7 (0.233 s) and 8 (0.267 s): frame 7 is shown
    assert sample_indices(times30, 3.0)[:3] == [0, 7, 15]
    assert sample_indices([], 1.0) == []


def test_fingerprint_json_round_trip_and_validation() -> None:
    fp = Fingerprint(rate=4.0, hashes=(0, 1, (1 << 64) - 1, 0x0123456789ABCDEF))
    data = json.loads(json.dumps(fp.to_json()))
    assert data["hashes"][2] == "ffffffffffffffff"
    assert Fingerprint.from_json(data) == fp
    assert fp.duration_s == 1.0
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        Fingerprint(hashes=(1 << 64,))
    with pytest.raises(ValueError, match="rate"):
        Fingerprint(rate=0)


def test_fingerprint_of_a_reencoded_copy_is_close_and_of_another_clip_far(
    corpus: dict[str, tuple[Item, Analysis]],
) -> None:
    """The one decode pass samples the pHash at 4 Hz; a crf 35 half-size copy is a few bits away per sample."""
    _, a = corpus["clean_a_5s.mp4"]
    _, copy = corpus["copy_a_crf35_half.mp4"]
    _, other = corpus["clean_b_10s.mp4"]
    assert a.fingerprint is not None and copy.fingerprint is not None and other.fingerprint is not None
    assert len(a.fingerprint.hashes) == 20 and a.fingerprint.rate == 4.0
    assert len(other.fingerprint.hashes) == 40
    assert len(a.frame_hashes) == a.frames == 120
    assert a.fingerprint.hashes == tuple(int(a.frame_hashes[i]) for i in range(0, 120, 6))

    def mean_bits(x: Fingerprint, y: Fingerprint) -> float:
        return float(np.mean([hamming(p, q) for p, q in zip(x.hashes, y.hashes, strict=False)]))

    assert mean_bits(a.fingerprint, copy.fingerprint) <= 6
    assert mean_bits(a.fingerprint, other.fingerprint) >= 20


def test_no_fingerprint_is_a_failed_finding() -> None:
    """A readable analysis without a fingerprint fails the ``fingerprint`` check (never a silent pass)."""
    a = Analysis(path=Path("x.mp4"), status="ok", frames=3, diffs=np.zeros(3, np.float32))
    f = _named(check(a, None))["fingerprint"]
    assert (f.passed, f.severity) == (False, Severity.ERROR)
    assert not passed(check(a, None))


# -- loops and cuts ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "repeats"), [("loop_10s_from_5s.mp4", 2), ("loop_30s_from_5s.mp4", 6)])
def test_a_looped_clip_fails_with_its_period_and_ranges(
    corpus: dict[str, tuple[Item, Analysis]], name: str, repeats: int
) -> None:
    _, a = corpus[name]
    findings = check(a, Expectation(frames=a.frames, fps=24, duration_s=5.0 * repeats))
    f = _named(findings)
    assert (f["loop"].passed, f["loop"].severity) == (False, Severity.ERROR)
    assert f["loop"].measured == [f"{5 * k:g}-{5 * (k + 1):g}" for k in range(repeats)]
    assert "5.00 s period" in f["loop"].message
    assert f["cuts"].passed  # the restarts are the loop's, not cuts
    assert not passed(findings)


def test_a_compilation_of_shots_fails_with_the_cut_times(corpus: dict[str, tuple[Item, Analysis]]) -> None:
    item, a = corpus["cuts_30s.mp4"]
    f = _named(check(a, Expectation(frames=a.frames, fps=24, duration_s=30.0)))
    assert (f["cuts"].passed, f["cuts"].severity) == (False, Severity.ERROR)
    assert f["cuts"].measured == [round(b / 24, 3) for b in item.cut_frames]
    assert f["loop"].passed


def test_clean_clips_and_a_copy_pass_loop_and_cuts(corpus: dict[str, tuple[Item, Analysis]]) -> None:
    for name in ("clean_a_5s.mp4", "clean_b_10s.mp4", "clean_c_30s.mp4", "copy_a_crf35_half.mp4"):
        f = _named(check(corpus[name][1], None))
        assert f["loop"].passed and f["cuts"].passed and f["fingerprint"].passed, (name, f["loop"], f["cuts"])


def test_a_cut_at_a_planned_chunk_join_is_left_to_the_seam_check(corpus: dict[str, tuple[Item, Analysis]]) -> None:
    """± 1 frame around ``Expectation.boundaries`` is the seam check's: no cut there, but one elsewhere is."""
    item, a = corpus["cuts_30s.mp4"]
    joins = item.cut_frames
    f = _named(check(a, Expectation(boundaries=tuple(b + 1 for b in joins))))
    assert f["cuts"].passed and not f["seams"].passed
    f = _named(check(a, Expectation(boundaries=joins[1:])))
    assert not f["cuts"].passed and f["cuts"].measured == [round(joins[0] / 24, 3)]


def test_one_shot_false_reports_loops_and_cuts_without_failing(corpus: dict[str, tuple[Item, Analysis]]) -> None:
    for name, what in (("loop_10s_from_5s.mp4", "loop"), ("cuts_30s.mp4", "cuts")):
        findings = check(corpus[name][1], Expectation(one_shot=False))
        f = _named(findings)[what]
        assert (f.passed, f.severity) == (False, Severity.INFO)
        assert passed(findings)


def _ignore(*_: object) -> None:
    return None


def test_synthetic_backend_videos_are_one_shot(tmp_path: Path) -> None:
    """The synthetic backend's procedural scenes (periodic waves, Lissajous shapes) are neither loops nor cuts."""
    backend = SyntheticBackend()
    backend.setup()
    for seed in (0, 3):
        frames = backend.generate(
            ChunkRequest(
                prompt="p",
                negative_prompt=None,
                seed=seed,
                frames=480,
                width=320,
                height=192,
                guidance=1.0,
                steps=1,
                fps=24.0,
            ),
            _ignore,
        )
        a = analyze(qa_corpus.write(tmp_path / f"syn{seed}.mp4", frames, fps=24, crf=20))
        f = _named(check(a, Expectation(frames=480, fps=24, duration_s=20.0, width=320, height=192)))
        assert f["loop"].passed and f["cuts"].passed, (f["loop"], f["cuts"])


# -- audit -------------------------------------------------------------------------------------


def test_audit_reports_fingerprint_loops_and_cuts(corpus: dict[str, tuple[Item, Analysis]]) -> None:
    auditor = Auditor(Expectations(None, fps=24.0), source="corpus")
    for name in ("clean_a_5s.mp4", "loop_10s_from_5s.mp4", "cuts_30s.mp4"):
        auditor.add(name, corpus[name][0].path)
    audit = auditor.finish()
    data = report(audit)
    files = {f["name"]: f for f in data["files"]}
    fp = Fingerprint.from_json(files["clean_a_5s.mp4"]["fingerprint"])
    assert fp == corpus["clean_a_5s.mp4"][1].fingerprint
    assert "loop" in files["loop_10s_from_5s.mp4"]["failed_checks"]
    assert "cuts" in files["cuts_30s.mp4"]["failed_checks"]
    assert files["clean_a_5s.mp4"]["passed"]
    page = render_html(audit)
    assert "<h2>Loops and cuts</h2>" in page and "0-5, 5-10" in page and "4.0, 9.0, 12.0" in page


def test_audit_finds_copies_across_ids(corpus: dict[str, tuple[Item, Analysis]], tmp_path: Path) -> None:
    """A re-encode under another name fails copy_of (both named), a loop of a file fails (it contains it), the
    looped original is only warned, unrelated clips pass."""
    src = corpus["clean_a_5s.mp4"][0].path
    copy = qa_corpus.reencode(src, tmp_path / "other_id_5s.mp4", fps=24, crf=36, scale=0.5)
    loop = qa_corpus.write(tmp_path / "a_10s.mp4", qa_corpus.looped(qa_corpus.decode(src), 240), fps=24, crf=23)
    auditor = Auditor(Expectations(None, fps=24.0), source="corpus")
    auditor.add("clean_a_5s.mp4", src)
    auditor.add("loop_10s_from_5s.mp4", loop)
    auditor.add("other_id_5s.mp4", copy)
    others = [n for n in corpus if n.startswith("clean_") and n != "clean_a_5s.mp4"][:2]
    for name in others:
        auditor.add(name, corpus[name][0].path)
    files = {f.name: {x.check: x for x in f.findings} for f in auditor.finish().files}
    reencoded = files["other_id_5s.mp4"]["copy_of"]
    assert not reencoded.passed and reencoded.severity == Severity.ERROR and "clean_a_5s.mp4" in reencoded.message
    looped = files["loop_10s_from_5s.mp4"]["copy_of"]
    assert not looped.passed and looped.severity == Severity.ERROR and "contains" in looped.message
    for name in others:
        assert files[name]["copy_of"].passed, files[name]["copy_of"]
