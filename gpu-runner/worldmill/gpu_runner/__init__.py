"""The GPU runner: consumes the GPU job queue, keeps models warm, makes exactly the planned video.

The only package that imports torch (through its diffusers backend, lazily). Modules:
``backends`` (cheap constructor, ``setup`` loads weights, ``generate``, ``close``), ``cache`` (warm
models by execution signature within a memory budget), ``selection`` (which job next), ``video``
(assemble chunks, convert fps, encode), ``worker`` (the loop), ``app`` (the process).
"""
