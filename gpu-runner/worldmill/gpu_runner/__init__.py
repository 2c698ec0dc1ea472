"""The GPU runner: consumes the GPU job queue, keeps models warm, makes exactly the planned video.

The only package that imports torch (through its backends, lazily). tests/test_docs.py checks that
the list below names every module of the package, and only those.

Modules:
    backends    cheap constructor, ``setup`` loads weights, ``generate``, ``close`` (one per engine)
    cache       warm models by execution signature within a memory budget
    devices     which device a runner computes on and how much memory a job took
    selection   which held job runs next (pure)
    jobwork     one job's work outside the event loop: chunks, then assemble, convert, encode
    video       assemble chunks, convert fps, encode exactly the planned frames
    inputs      a job's inputs from the store: checked, downloaded, decoded, prefetched during the job before
    provenance  what a finished video records: model, plan, seeds, versions, device, timings
    worker      the loop: hold a window of jobs, run the best next one, overlap the rest
    settings    the runner's settings (``WM_GPU_RUNNER_*``)
    app         the process (``worldmill serve gpu-runner``)
"""
