"""Which job a runner takes next: loaded models first, oldest first, nobody starves (pure)."""

from __future__ import annotations

from worldmill.contracts.generation import ExecutionSignature
from worldmill.gpu_runner.selection import Candidate, choose, passed_over

A = ExecutionSignature(model="m", checkpoint="a", dtype="float32")
B = ExecutionSignature(model="m", checkpoint="b", dtype="float32")
C = ExecutionSignature(model="m", checkpoint="c", dtype="float32")


def _jobs(*sigs: ExecutionSignature) -> list[Candidate]:
    return [Candidate(f"j{i}", sig, received=float(i)) for i, sig in enumerate(sigs)]


def test_the_model_in_use_goes_first_then_a_loaded_one_then_the_oldest() -> None:
    """Prefer the current model, then any loaded one, then the oldest job."""
    jobs = _jobs(B, C, A, B)
    assert choose(jobs, [A, B], max_passes=3, current=A) == 2
    assert choose(jobs, [A, B], max_passes=3, current=None) == 0  # oldest job of a loaded model (A or B)
    assert choose(jobs, [C], max_passes=3) == 1
    assert choose(jobs, [], max_passes=3) == 0


def test_a_job_passed_over_too_often_goes_next() -> None:
    """An old job of another model is taken after max_passes passes, even if the loaded model has work."""
    jobs = _jobs(C, A, A, A, A)
    order = []
    for _ in range(4):
        i = choose(jobs, [A], max_passes=2, current=A)
        passed_over(jobs, i)
        order.append(jobs.pop(i).job_id)
    assert order[:3] == ["j1", "j2", "j0"]  # j0 (model C) waited two passes, then went first


def test_an_interleaved_queue_needs_one_load_per_signature_when_all_fit() -> None:
    """With every model loaded after its first job, a window of A,B,C,A,B,C… loads each model once."""
    jobs = _jobs(*([A, B, C] * 4))
    loaded: list[ExecutionSignature] = []
    loads = 0
    current = None
    while jobs:
        window = jobs[:4]
        i = choose(window, loaded, max_passes=3, current=current)
        passed_over(window, i)
        job = jobs.pop(i)
        if job.signature not in loaded:
            loaded.append(job.signature)
            loads += 1
        current = job.signature
    assert loads == 3
