"""The generate service: plans specs against model cards, enqueues GPU jobs, tracks runs.

``planning`` turns a prompt spec and a model card into an exact ``GenerationPlan`` (chunks, seeds,
fps conversion, expected output, GPU estimate) or refuses it with the spec field and the rule,
before any GPU time is spent. tests/test_docs.py checks that the list below names every module of
the package, and only those.

Modules:
    planning   plan a spec against a model card and the configured backends (pure)
    runs       run ids, jobs, and how each job event moves a run's state (pure)
    backlog    what ``worldmill generate --missing|--failed|--unverified`` queues (pure)
    service    remember specs, plan them, enqueue GPU jobs, follow every run
    settings   the runtime settings plus which runner backends this deployment has
    api        HTTP routes
    cli        ``worldmill generate``, ``worldmill runs …``, ``worldmill follow``
    app        the service process
"""
