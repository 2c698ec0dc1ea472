"""Which Hugging Face repos and revisions a model card needs, as data.

``worldmill models pull`` fills the Hugging Face cache with exactly these; the GPU runner reads them
from the cache with ``local_files_only=True`` and, when one is missing, prints :func:`pull_command`.

Diffusers weights (from the diffusers pipelines' own examples, ``diffusers==0.42.1``):

* Cosmos-Predict2.5: ``nvidia/Cosmos-Predict2.5-{2B,14B}`` on branch ``diffusers/base/post-trained``
  (``Cosmos2_5_PredictBasePipeline`` docstring; the 2B repo). The 14B branch is **unverified**: no
  first-party page or code read names it; worldmill assumes the 2B layout (one third-party script does
  the same). If the branch is named differently, ``models pull`` says "revision not found".
* Cosmos 3: ``nvidia/Cosmos3-Nano`` on ``main`` (``Cosmos3OmniPipeline``: diffusers' ``SeaCache`` docstring
  loads it with no revision; the hub page's snippet does the same). Gating of the Cosmos 3 repos
  (OpenMDW licence) is **unverified**; ``gated`` follows the ``nvidia/`` rule below.
* Cosmos-Transfer2.5: ``nvidia/Cosmos-Transfer2.5-2B`` on ``diffusers/general``, one controlnet per
  control on ``diffusers/controlnet/general/{edge,depth,seg,blur}`` (``Cosmos2_5_TransferPipeline``
  docstring). worldmill's ``vis`` control is the ``blur`` controlnet. The Cosmos 2.5 repos are gated:
  accept the NVIDIA Open Model License on each repo's page, then set ``HF_TOKEN``.

Safety checker: diffusers' Cosmos 2.5 pipelines use ``cosmos_guardrail.CosmosSafetyChecker`` (PyPI
``cosmos_guardrail``; read at version 0.3.2, the same in 0.3.0). Its constructor loads:

* ``nvidia/Cosmos-1.0-Guardrail`` (not ``nvidia/Cosmos-Guardrail1``, which NVIDIA's own
  Predict2.5/Transfer2.5 scripts use), default revision ``main``, only ``blocklist/*`` (keyword lists
  and NLTK data; ``Blocklist``) and ``face_blur_filter/Resnet50_Final.pth`` (``RetinaFaceFilter``),
  each through ``snapshot_download(repo, allow_patterns=…)``. The video content filter is commented
  out in 0.3.x, so ``video_content_safety_filter/*`` and the SigLIP model are not loaded.
* ``Qwen/Qwen3Guard-Gen-0.6B`` (revision ``main``; ``AutoModelForCausalLM`` / ``AutoTokenizer``
  ``from_pretrained``), the prompt classifier. Apache-2.0, not gated. No Llama-Guard base model is
  needed any more: 0.1.0 used ``meta-llama/LlamaGuard-7b`` plus the
  ``nvidia/Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0`` adapter; 0.3.x replaced both.

``CosmosSafetyChecker(checkpoint_id=…)`` takes another *repo id*, not a folder (``snapshot_download``
rejects paths), and the Qwen3Guard id cannot be changed from outside. Offline use therefore goes
through the Hugging Face cache: pull the repos into it (``HF_HUB_CACHE`` or ``HF_HOME``), then run
with ``HF_HUB_OFFLINE=1`` so both huggingface_hub and transformers resolve ``main`` from the cache's
``refs/`` without a network call. The blocklist's NLTK data is copied on first use into
``$HF_HOME/cosmos_guardrail/<commit>/nltk_data``, so ``HF_HOME`` must be writable.

Sizes (``approx_gb``) are ``None`` where no published figure was found: ``models pull`` reports the
real size from the Hub's file list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from worldmill.contracts.base import Contract
from worldmill.contracts.cards import ControlType, ModelCard

__all__ = [
    "CONTROLNET_REVISIONS",
    "GUARDRAIL_DOWNLOADS",
    "GUARDRAIL_REPOS",
    "GUARDRAIL_TARGET",
    "PIPELINE_REVISIONS",
    "HubDownload",
    "NoCheckpointError",
    "controlnet_revision",
    "guardrail_pull_command",
    "hub_downloads",
    "parse_controls",
    "pipeline_revision",
    "pull_command",
]

HubRole = Literal["pipeline", "controlnet", "guardrail"]

#: Branches holding the diffusers-format pipeline weights, per card family.
#: The 14B Predict branch is assumed to match the 2B one (unverified, see the module docstring).
PIPELINE_REVISIONS: dict[str, str] = {
    "predict": "diffusers/base/post-trained",
    "transfer": "diffusers/general",
    # Cosmos 3: the diffusers layout (model_index.json, Cosmos3OmniPipeline) is the repo's main
    # branch (diffusers' own example: from_pretrained("nvidia/Cosmos3-Nano"), no revision).
    "cosmos3": "main",
}
#: Transfer's controlnets, one branch each; ``vis`` is the blur control.
CONTROLNET_REVISIONS: dict[ControlType, str] = {
    ControlType.EDGE: "diffusers/controlnet/general/edge",
    ControlType.DEPTH: "diffusers/controlnet/general/depth",
    ControlType.SEG: "diffusers/controlnet/general/seg",
    ControlType.VIS: "diffusers/controlnet/general/blur",
}


class NoCheckpointError(ValueError):
    """The card names no weights that can be downloaded (no Hugging Face repo, or no diffusers branch)."""


class HubDownload(Contract):
    """One repo at one revision that a model card needs in the Hugging Face cache."""

    repo: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    revision: str = Field(min_length=1, description="Branch, tag or commit.")
    role: HubRole
    control: ControlType | None = Field(default=None, description="The control a controlnet is for.")
    gated: bool = Field(description="The repo asks users to accept a licence before downloading.")
    approx_gb: float | None = Field(default=None, ge=0, description="Published size, if any.")
    allow_patterns: tuple[str, ...] = Field(
        default=(), description="Only files matching these globs are needed; empty: the whole revision."
    )
    why: str = Field(description="What the files are for, in words.")

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        """What makes two downloads the same download (cards share the guardrail)."""
        return (self.repo, self.revision, self.allow_patterns)


#: What ``cosmos_guardrail.CosmosSafetyChecker()`` (0.3.x) loads, with the same file patterns.
GUARDRAIL_DOWNLOADS: tuple[HubDownload, ...] = (
    HubDownload(
        repo="nvidia/Cosmos-1.0-Guardrail",
        revision="main",
        role="guardrail",
        gated=True,
        allow_patterns=("blocklist/*", "face_blur_filter/Resnet50_Final.pth"),
        why="Cosmos safety checker: prompt blocklist and the RetinaFace face-blur model (cosmos_guardrail)",
    ),
    HubDownload(
        repo="Qwen/Qwen3Guard-Gen-0.6B",
        revision="main",
        role="guardrail",
        gated=False,
        why="Cosmos safety checker: the Qwen3Guard prompt classifier (cosmos_guardrail)",
    ),
)

#: ``(repo, revision)`` of each guardrail download. Checking them in the cache offline needs the
#: patterns too: ``snapshot_download(repo, revision=…, allow_patterns=…, local_files_only=True)``
#: with :data:`GUARDRAIL_DOWNLOADS`' ``allow_patterns``, as only those files are pulled.
GUARDRAIL_REPOS: tuple[tuple[str, str], ...] = tuple((d.repo, d.revision) for d in GUARDRAIL_DOWNLOADS)
#: The ``models pull`` target that fetches the safety checker's repos alone.
GUARDRAIL_TARGET = "guardrail"


def _hub_id(card: ModelCard) -> str:
    if card.hub_id is None:
        raise NoCheckpointError(f"model card {card.id!r} names no Hugging Face repo (hub_id is empty)")
    return card.hub_id


def pipeline_revision(card: ModelCard) -> str:
    """The branch of ``card.hub_id`` that holds the diffusers pipeline."""
    _hub_id(card)
    revision = PIPELINE_REVISIONS.get(card.family)
    if revision is None:
        raise NoCheckpointError(f"model card {card.id!r} (family {card.family!r}) has no diffusers weights")
    return revision


def controlnet_revision(card: ModelCard, control: ControlType) -> str:
    """The branch of ``card.hub_id`` that holds the controlnet for ``control``."""
    _hub_id(card)
    if card.family != "transfer":
        raise NoCheckpointError(f"model card {card.id!r} (family {card.family!r}) has no controlnets")
    if control not in card.controls:
        raise NoCheckpointError(f"model card {card.id!r} takes no {control.value!r} control")
    return CONTROLNET_REVISIONS[control]


def _ordered(controls: Iterable[ControlType]) -> list[ControlType]:
    wanted = set(controls)
    return [c for c in ControlType if c in wanted]


def hub_downloads(
    card: ModelCard, controls: Iterable[ControlType] = (), *, guardrail: bool = True
) -> tuple[HubDownload, ...]:
    """Everything ``card`` needs in the Hugging Face cache.

    Transfer: the pipeline plus one controlnet per control (all four when none are given). Predict:
    the pipeline (controls are ignored). The synthetic stand-in needs nothing. With ``guardrail``
    (and a card that requires the safety checker) the checker's repos are added. A card without a
    Hugging Face repo raises :class:`NoCheckpointError`.
    """
    if card.family == "synthetic":
        return ()
    repo = _hub_id(card)
    gated = repo.startswith("nvidia/")
    out = [
        HubDownload(
            repo=repo,
            revision=pipeline_revision(card),
            role="pipeline",
            gated=gated,
            why=f"{card.display_name}: diffusers pipeline ({card.diffusers_pipeline or 'from model_index.json'})",
        )
    ]
    if card.family == "transfer":
        chosen = _ordered(controls) or _ordered(card.controls)
        out += [
            HubDownload(
                repo=repo,
                revision=controlnet_revision(card, control),
                role="controlnet",
                control=control,
                gated=gated,
                why=f"{card.display_name}: controlnet for the {control.value!r} control"
                + (" (blur)" if control is ControlType.VIS else ""),
            )
            for control in chosen
        ]
    if guardrail and card.requires_safety_checker:
        out += GUARDRAIL_DOWNLOADS
    return tuple(out)


def parse_controls(text: str) -> tuple[ControlType, ...]:
    """``"edge,depth"`` → the controls, in the canonical order; unknown names raise ``ValueError``."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    valid = [c.value for c in ControlType]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(
            f"unknown control(s) {', '.join(repr(n) for n in unknown)}; valid: {', '.join(valid)} "
            "(vis is the blur control)"
        )
    return tuple(_ordered(ControlType(n) for n in names))


def guardrail_pull_command() -> str:
    """The ``worldmill models pull …`` line that fills the cache with the safety checker's repos."""
    return f"worldmill models pull {GUARDRAIL_TARGET}"


def pull_command(card_id: str, controls: Iterable[ControlType] = ()) -> str:
    """The exact ``worldmill models pull …`` line that fills the cache for ``card_id`` (and ``controls``)."""
    chosen = _ordered(controls)
    line = f"worldmill models pull {card_id}"
    if chosen:
        line += " --controls " + ",".join(c.value for c in chosen)
    return line
