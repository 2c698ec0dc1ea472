"""The prompt service: scenario manifests become versioned, reproducible prompt specs.

Pure core (no I/O): ``source`` (safe YAML/JSON loading with positions), ``manifest`` (the format),
``templates``, ``identity`` (prompt ids and seeds), ``expand`` (validation and expansion),
``input_specs`` (specs for input videos). Edges: ``service`` (storage and events through the
runtime), ``api`` (HTTP), ``cli`` (commands), ``app`` (the service process).
"""
