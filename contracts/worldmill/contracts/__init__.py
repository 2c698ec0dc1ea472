"""worldmill contracts: the data every service and runner agrees on.

Pure pydantic v2 models and pure functions, nothing else: no I/O, no clients, no torch. Every
model is frozen and forbids unknown fields; every event or job carries a schema version and is
exported as a JSON Schema (see ``worldmill.contracts.registry``). tests/test_docs.py checks that the
list below names every module of the package, and only those.

Modules:
    base          the ``Contract`` base class and small shared types (ids, hashes, resolutions)
    envelope      the CloudEvents 1.0 envelope (structured JSON mode) and encode/decode
    cards         model cards: what each Cosmos model can really do
    backends      backend cards: what each way of running a model can do
    checkpoints   which Hugging Face repos and revisions a model card needs
    prompts       manifests and prompt specs, input-video specs
    upsample      prompt upsampling: the job, its outcome events, how a rewrite was made
    generation    generation requests, plans, GPU jobs, progress and outcomes, runs, provenance
    qa            QA findings and verdicts
    objects       stored objects and upload notifications
    augment       Cosmos-Transfer augmentation requests, controls and records
    catalog       the catalog's events (ratings, notes, exports, deletions) and answers
    deadletter    what a consumer writes when it gives up on a message
    http_errors   the error bodies every service answers with
    subjects      NATS subject names; streams and consumers as data
    permissions   who may publish and consume what on NATS, one grant per user
    keys          bucket names and object keys as pure functions of ids
    registry      every event/job type, for decoding and schema export
"""
