"""The prompt service: scenario manifests become versioned, reproducible prompt specs.

The pure modules do no I/O and are tested without servers. tests/test_docs.py checks that the list
below names every module of the package, and only those.

Modules:
    source        safe YAML/JSON loading with the position of every value (pure)
    manifest      the manifest format (pure)
    templates     prompt templates with named variables (pure)
    identity      prompt ids and seeds derived from what a spec is (pure)
    qa_options    a scenario's QA requirements from the manifest's ``qa`` keys (pure)
    expand        validation and expansion, every problem at once (pure)
    versioning    what counts as a change, how a stored spec is indexed (pure)
    input_specs   Transfer specs for input videos (pure)
    importer      per-video Cosmos prompt JSON files → one manifest (pure)
    service       storage and events through the runtime
    api           HTTP routes
    cli           ``worldmill manifest …`` and ``worldmill prompts …``
    app           the service process
"""
