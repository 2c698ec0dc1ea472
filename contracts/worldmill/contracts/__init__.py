"""worldmill contracts: the data every service and runner agrees on.

Pure pydantic v2 models and pure functions, nothing else: no I/O, no clients, no torch. Every
model is frozen and forbids unknown fields; every event or job carries a schema version and is
exported as a JSON Schema (see ``worldmill.contracts.registry``).

Modules:
    base        the ``Contract`` base class and small shared types (ids, hashes, resolutions)
    envelope    the CloudEvents 1.0 envelope (structured JSON mode) and encode/decode
    cards       model cards: what each Cosmos model can really do
    prompts     manifests and prompt specs, upsampling
    generation  generation requests, plans, GPU jobs, progress and outcomes, provenance
    qa          QA findings and verdicts
    objects     stored objects and upload notifications
    augment     Cosmos-Transfer augmentation requests and controls
    deadletter  what a consumer writes when it gives up on a message
    subjects    NATS subject names; streams and consumers as data
    keys        bucket names and object keys as pure functions of ids
    registry    every event/job type, for decoding and schema export
"""
