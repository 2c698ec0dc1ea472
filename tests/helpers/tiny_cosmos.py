"""Tiny random Cosmos 2.5 pipelines, built offline, for CPU tests of the diffusers backend.

The components follow the real checkpoints' structure (Qwen2.5-VL text encoder whose layers are
concatenated into the text embedding, ``CosmosTransformer3DModel``, Wan VAE, flow UniPC scheduler)
at toy sizes, with random weights. Their output is meaningless: tests assert shapes, dtypes,
determinism and plumbing, never pixels. ``save_pretrained`` writes a folder that the backend then
loads through the real ``DiffusionPipeline.from_pretrained`` path, exactly like a checkpoint.

The safety checker is the backend's plain pass-through object (never a ``ModelMixin``): diffusers
then writes ``"safety_checker": [null, null]`` into ``model_index.json`` like the real converted
checkpoints, and the loader must be handed a checker explicitly. Building takes well under a
second after the imports; nothing touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diffusers
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

from worldmill.gpu_runner.backends.diffusers_backend import PassThroughSafetyChecker
from worldmill.gpu_runner.backends.torchvision_stand_in import apply_torchvision_stand_in

# diffusers' constructors are untyped: reached through Any so strict mypy accepts the calls.
_diffusers: Any = diffusers

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_CORPUS = (
    "A red car drives down a wet city street at night.",
    "A robot arm picks up a green cube from a table.",
    "Snow falls on a quiet road while a bus waits at the light.",
    "The camera pans across a warehouse with shelves and forklifts.",
    "You are a helpful assistant who will provide prompts to an image generator.",
    "The video captures a series of frames showing ugly scenes, static with no motion.",
)
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: RoPE / position-embedding limits: 96 latent frames, 32x32 latent patches. The Transfer pipeline
#: caps num_frames_per_chunk at max(max_size / patch) (here 96), so the real cards' 93-frame
#: chunks run at 32x32.
MAX_SIZE = (96, 32, 32)
#: A tiny Transfer checkpoint has one controlnet folder per control type: <folder>/controlnets/<type>/.
CONTROL_TYPES = ("edge", "depth", "seg", "vis")


def _tokenizer() -> Any:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    # transformers 5 wants the merges as (a, b) tuples; strings fail.
    merges: Any = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=_CHAT_TEMPLATE,
    )


def _text_encoder(tokenizer: Any) -> Any:
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default"},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 16},
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model: Any = Qwen2_5_VLForConditionalGeneration(config)
    return model.eval()


def _transformer(*, transfer: bool) -> Any:
    extra: dict[str, Any] = {}
    if transfer:
        extra = {
            "controlnet_block_every_n": 1,
            "img_context_dim_in": 32,
            "img_context_num_tokens": 4,
            "img_context_dim_out": 32,
        }
    return _diffusers.CosmosTransformer3DModel(
        in_channels=16 + 1,
        out_channels=16,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        mlp_ratio=2,
        text_embed_dim=32,  # text hidden 16 x 2 layers, concatenated by the pipeline
        adaln_lora_dim=4,
        max_size=MAX_SIZE,
        patch_size=(1, 2, 2),
        rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=True,
        extra_pos_embed_type="learnable",
        **extra,
    )


def _controlnet() -> Any:
    return _diffusers.CosmosControlNetModel(
        n_controlnet_blocks=2,
        in_channels=16 + 1 + 1,
        latent_channels=18,
        model_channels=32,
        num_attention_heads=2,
        attention_head_dim=16,
        mlp_ratio=2,
        text_embed_dim=32,
        adaln_lora_dim=4,
        patch_size=(1, 2, 2),
        max_size=MAX_SIZE,
        rope_scale=(2.0, 1.0, 1.0),
        extra_pos_embed_type="learnable",
        img_context_dim_in=32,
        img_context_dim_out=32,
        use_crossattn_projection=False,
    )


def _vae() -> Any:
    return _diffusers.AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def _scheduler() -> Any:
    return _diffusers.UniPCMultistepScheduler(
        use_karras_sigmas=True,
        use_flow_sigmas=True,
        prediction_type="flow_prediction",
        sigma_max=200.0,
        sigma_min=0.01,
    )


def _build(folder: Path, *, transfer: bool) -> Path:
    apply_torchvision_stand_in()
    torch.manual_seed(0)  # the same seed for both: Predict and Transfer share a text encoder and VAE
    tokenizer = _tokenizer()
    parts: dict[str, Any] = {
        "text_encoder": _text_encoder(tokenizer),
        "tokenizer": tokenizer,
        "transformer": _transformer(transfer=transfer),
        "vae": _vae(),
        "scheduler": _scheduler(),
        "safety_checker": PassThroughSafetyChecker(),
    }
    if transfer:
        pipe = _diffusers.Cosmos2_5_TransferPipeline(controlnet=_controlnet(), **parts)
    else:
        pipe = _diffusers.Cosmos2_5_PredictBasePipeline(**parts)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    if transfer:
        # The layout of the hub's diffusers/general branch: no controlnet in the pipeline folder
        # ("controlnet": [null, null]); each control type's controlnet is its own folder.
        index = json.loads((folder / "model_index.json").read_text())
        index["controlnet"] = [None, None]
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        for path in (folder / "controlnet").iterdir():
            path.unlink()
        (folder / "controlnet").rmdir()
        for n, control in enumerate(CONTROL_TYPES):
            torch.manual_seed(100 + n)  # each control type its own (random) weights
            _controlnet().save_pretrained(folder / "controlnets" / control)
    return folder


def build_tiny_predict(folder: Path) -> Path:
    """Build a tiny random Cosmos-Predict2.5 pipeline and save it into ``folder`` (returned)."""
    return _build(folder, transfer=False)


def build_tiny_transfer(folder: Path) -> Path:
    """Build a tiny random Cosmos-Transfer2.5 pipeline saved into ``folder`` like the hub's diffusers layout
    (no controlnet in the pipeline), with one controlnet per control type under ``controlnets/<type>/``."""
    return _build(folder, transfer=True)


def _cosmos3_transformer(tokenizer: Any) -> Any:
    """A one-layer ``Cosmos3OmniTransformer`` (it embeds the tokens itself: no separate text encoder)."""
    return _diffusers.Cosmos3OmniTransformer(
        head_dim=6,
        hidden_size=6,
        intermediate_size=12,
        hidden_act="relu2",
        latent_channel=16,  # the tiny Wan VAE's z_dim
        latent_patch_size=1,
        num_attention_heads=1,
        num_hidden_layers=1,
        num_key_value_heads=1,
        patch_latent_dim=16,
        qk_norm_for_text=False,
        rope_axes_dim=[1, 1, 1],
        vocab_size=len(tokenizer),
    )


def build_tiny_cosmos3(folder: Path) -> Path:
    """Build a tiny random Cosmos 3 ``Cosmos3OmniPipeline`` (no sound tokenizer) saved into ``folder`` (returned).

    The safety checker is the plain pass-through object, so ``model_index.json`` says
    ``"safety_checker": [null, null]`` and the loader must be given one, as for Cosmos 2.5.
    """
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    pipe = _diffusers.Cosmos3OmniPipeline(
        transformer=_cosmos3_transformer(tokenizer),
        text_tokenizer=tokenizer,
        vae=_vae(),
        scheduler=_scheduler(),
        safety_checker=PassThroughSafetyChecker(),
    )
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    return folder
