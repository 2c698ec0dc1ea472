"""The generate service: plans specs against model cards, enqueues GPU jobs, tracks runs.

Pure core (no I/O): ``planning`` turns a prompt spec and a model card into an exact
``GenerationPlan`` (chunks, seeds, fps conversion, expected output, GPU estimate) or refuses it
with the spec field and the rule, before any GPU time is spent.
"""
