"""Cosmos 2.5 on the real diffusers path, through worldmill's backend, with random weights (no downloads).

Full-size Cosmos-Predict2.5-2B and Cosmos-Transfer2.5-2B pipeline folders are built with random
weights (DiT 28 blocks x 16 heads x 128; a Qwen2.5-VL text encoder 3584 wide x 28 layers, as
Reason1-7B, but with a 1024-wide MLP so that the build is fast; the Wan2.1 VAE; a 4-block
controlnet), saved in worldmill's checkpoint layout (Transfer: no controlnet in the pipeline,
``controlnets/edge/`` beside it) and loaded through ``create_backend`` in bf16. Phases, in order,
each with a share of the time budget (a phase that no longer fits is recorded as skipped):

* ``env``            the device (``describe_device``) and library versions;
* ``build``          build and ``save_pretrained`` both folders;
* ``setup``          ``backend.setup()`` of Predict (from_pretrained, hashing, moving to the device);
* ``attn:<name>``    seconds per denoising step of a 35-step 720p (1280x704) / 93-frame chunk with CFG
                     (guidance 7), per attention backend (native, _native_cudnn, _native_flash,
                     _native_efficient), from the ``on_step`` timestamps of ``backend.generate()``
                     (the call is stopped with ``Canceled`` after ``--steps`` steps: the VAE decode is
                     measured on its own), projected to 35 steps; a failing backend is recorded as text;
* ``determinism``    the same seed twice gives identical frames, another seed differs (small size);
* ``vae``            Wan VAE encode and decode of 720p / 93 frames: seconds and peak memory each;
* ``transfer``       one ``generate_video`` call of Transfer (edge): 181 frames at 480p (768x432),
                     chunks of 93 with overlap 1: seconds, chunks reported by the progress callback, shape;
* ``cosmos3``        Cosmos3-Nano: a full-size random ``Cosmos3OmniPipeline`` folder (the 36-layer MoT transformer,
                     4096 wide, and the Wan2.2 VAE) built, saved, loaded through ``create_backend`` (backend
                     ``cosmos3``), then seconds per denoising step of a 35-step 720p (1280x720) / 189-frame chunk
                     with guidance 6 (the ``attn`` timing: stopped after ``--steps`` steps, projected to 35 steps)
                     and the peak memory of that call; the folder is removed afterwards;
* ``compile``        the native backend again with ``compile="regional"``: first call (compile) and step time.

Every phase records its wall seconds and peak memory (``PeakMemory``: CUDA peak allocated; on the
CPU the process's peak RSS, which only grows). Pixels are meaningless. The table reads phase,
what, seconds, peak memory and notes; the last stdout line is one JSON object with every figure,
also written to ``$OUT/gpu.json`` (after every phase) when ``$OUT`` is set.

    python bench/gpu.py [--budget-s 540] [--steps 3] [--phases env,build,setup,attn:native,compile]  # on a CUDA GPU
    .venv/bin/python bench/gpu.py --tiny                 # the same code on the CPU at toy sizes (CI)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ATTENTION_BACKENDS = ("native", "_native_cudnn", "_native_flash", "_native_efficient")
CPU_ATTENTION_BACKENDS = ("native",)
PREDICT, TRANSFER = "cosmos-predict2.5-2b", "cosmos-transfer2.5-2b"
COSMOS3, COSMOS3_FOLDER = "cosmos3-nano", "rand-cosmos3-nano"
COSMOS3_GUIDANCE, COSMOS3_FPS = 6.0, 24.0
PROMPT = "a robot arm stacks two red cubes on a table"
FULL_STEPS = 35
GUIDANCE = 7.0
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Video sizes (height, width) and model dimensions: full size, or toy ones for ``--tiny``."""

    hd: tuple[int, int]
    sd: tuple[int, int]
    ld: tuple[int, int]
    frames: int
    long_frames: int
    chunk: int
    text: tuple[int, int]  # text encoder hidden x layers: their product is the DiT's text input width
    text_mlp: int
    text_heads: tuple[int, int]  # attention heads, key/value heads
    mrope: tuple[int, int, int]
    dit: dict[str, Any]
    img: dict[str, Any]
    controlnet_every: int
    controlnet_blocks: int
    controlnet_channels: int
    vae: dict[str, Any]  # {} = the Wan2.1 VAE's defaults
    c3_hd: tuple[int, int]  # Cosmos 3 chunk (height, width) and frames
    c3_frames: int
    c3_dit: dict[str, Any]  # Cosmos3OmniTransformer arguments (vocab_size: the tokenizer's when None)
    c3_vae: dict[str, Any]  # AutoencoderKLWan arguments of the Cosmos 3 VAE

    @property
    def label(self) -> str:
        return f"{self.hd[1]}x{self.hd[0]}/{self.frames}f"


FULL = Sizes(
    hd=(704, 1280), sd=(432, 768), ld=(192, 320), frames=93, long_frames=181, chunk=93,
    text=(3584, 28), text_mlp=1024, text_heads=(28, 4), mrope=(16, 24, 24),
    dit={"num_attention_heads": 16, "attention_head_dim": 128, "num_layers": 28, "adaln_lora_dim": 256,
             "text_embed_dim": 1024, "encoder_hidden_states_channels": 1024},
    img={"img_context_dim_in": 1152, "img_context_dim_out": 2048, "img_context_num_tokens": 256},
    controlnet_every=7, controlnet_blocks=4, controlnet_channels=2048, vae={},
    # Cosmos3-Nano. diffusers 0.42.1's Cosmos3OmniTransformer defaults (transformer_cosmos3.py __init__) are the
    # architecture its docs load from "nvidia/Cosmos3-Nano" (docs/api/models/cosmos3_omni_transformer:
    # ``Cosmos3OmniTransformer.from_pretrained("nvidia/Cosmos3-Nano", subfolder="transformer")``), and they are
    # Qwen3-VL-8B's text model, which transformers' Cosmos3Omni docs say the Reasoner tower is identical to:
    # hidden 4096, 36 layers, 32 query / 8 key-value heads x head_dim 128, intermediate 12288 (SiLU), rope_theta 5e6,
    # mRoPE axes [24, 20, 20], vocab 151936; every layer holds both MoT pathways (separate Q/K/V/O, MLP and norms
    # for understanding and generation). Latents: 48 channels, patch 2 -> patch_latent_dim 48*2*2 = 192. Assumed
    # (the hub's config.json was not read): that Nano's config equals these defaults; the bench tokenizer is the
    # toy BPE one (prompt length differs from Qwen's tokenizer; the embedding is full size).
    c3_hd=(720, 1280), c3_frames=189,
    c3_dit={"head_dim": 128, "hidden_size": 4096, "intermediate_size": 12288, "hidden_act": "silu",
            "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 36, "latent_channel": 48,
            "latent_patch_size": 2, "patch_latent_dim": 192, "rope_theta": 5000000.0, "rope_axes_dim": [24, 20, 20],
            "vocab_size": 151936},
    # The Wan2.2 VAE (z_dim 48, x16 spatial / x4 temporal; the pipeline's vae_scale_factor_spatial is 16): the
    # Wan2.2-TI2V-5B VAE config of diffusers' scripts/convert_wan_to_diffusers.py (from memory, not re-read);
    # latents mean 0 / std 1 assumed (only the values differ from the real per-channel statistics).
    c3_vae={"base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
            "temperal_downsample": [False, True, True], "is_residual": True, "in_channels": 12, "out_channels": 12,
            "patch_size": 2, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
            "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48},
)  # fmt: skip
TINY = Sizes(
    hd=(32, 32), sd=(32, 32), ld=(32, 32), frames=9, long_frames=17, chunk=9,
    text=(16, 2), text_mlp=32, text_heads=(2, 2), mrope=(1, 1, 2),
    dit={"num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 2, "adaln_lora_dim": 4,
             "text_embed_dim": 32, "encoder_hidden_states_channels": 32},
    img={"img_context_dim_in": 32, "img_context_dim_out": 32, "img_context_num_tokens": 4},
    controlnet_every=1, controlnet_blocks=2, controlnet_channels=32,
    vae={"base_dim": 3, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1},
    # tests/helpers/tiny_cosmos.py build_tiny_cosmos3: a one-layer transformer on the tiny Wan2.1 VAE (z 16, x8).
    c3_hd=(32, 32), c3_frames=9,
    c3_dit={"head_dim": 6, "hidden_size": 6, "intermediate_size": 12, "hidden_act": "relu2", "latent_channel": 16,
            "latent_patch_size": 1, "num_attention_heads": 1, "num_hidden_layers": 1, "num_key_value_heads": 1,
            "patch_latent_dim": 16, "qk_norm_for_text": False, "rope_axes_dim": [1, 1, 1], "vocab_size": None},
    c3_vae={"base_dim": 3, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
            "temperal_downsample": [False, True, True]},
)  # fmt: skip

#: Rough seconds each phase needs on an H100/H200 (the budget check); CPU toy runs need little.
NEEDS_GPU = {"build": 60, "setup": 30, "attn": 30, "determinism": 20, "vae": 45, "transfer": 60, "compile": 120,
             "cosmos3": 240}  # fmt: skip


def _dit_config(s: Sizes) -> dict[str, Any]:
    text_in = s.text[0] * s.text[1]
    return dict(
        in_channels=17, out_channels=16, mlp_ratio=4.0, max_size=(128, 240, 240), patch_size=(1, 2, 2),
        rope_scale=(1.0, 3.0, 3.0), concat_padding_mask=True, extra_pos_embed_type=None,
        use_crossattn_projection=True, crossattn_proj_in_channels=text_in, **s.dit,
    )  # fmt: skip


def _controlnet_config(s: Sizes) -> dict[str, Any]:
    dit = _dit_config(s)
    keep = ("num_attention_heads", "attention_head_dim", "adaln_lora_dim", "text_embed_dim", "mlp_ratio",
            "patch_size", "max_size", "rope_scale", "extra_pos_embed_type", "use_crossattn_projection",
            "crossattn_proj_in_channels", "encoder_hidden_states_channels")  # fmt: skip
    return {k: dit[k] for k in keep} | {
        "n_controlnet_blocks": s.controlnet_blocks, "model_channels": s.controlnet_channels, "in_channels": 130,
        "latent_channels": 18, "img_context_dim_in": s.img["img_context_dim_in"],
        "img_context_dim_out": s.img["img_context_dim_out"],
    }  # fmt: skip


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


class Bench:
    """Runs the phases within the budget and collects every figure in ``self.report``."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch  # noqa: PLC0415 - after argument parsing: --help stays instant

        self.torch = torch
        self.args = args
        self.tiny: bool = args.tiny
        self.sizes = TINY if self.tiny else FULL
        self.device = "cpu" if self.tiny else "cuda"
        self.t0 = time.monotonic()
        self.out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
        self.work = Path(tempfile.mkdtemp(prefix="wm-bench-gpu-", dir=args.work))
        from worldmill.gpu_runner.backends.shared import SharedComponents  # noqa: PLC0415

        self.shared = SharedComponents()  # one per bench: backends of one config family share their components
        self.predict: Any = None
        self.native_step_s: float | None = None
        self.report: dict[str, Any] = {
            "bench": "gpu",
            "tiny": self.tiny,
            "device": self.device,
            "budget_s": args.budget_s,
            "sizes": {"hd": self.sizes.label, "steps_measured": args.steps, "full_steps": FULL_STEPS},
            "phases": {},
        }

    # -- plumbing ------------------------------------------------------------------------------

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def save(self) -> None:
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "gpu.json").write_text(json.dumps(self.report, indent=2, default=str))

    def phase(self, name: str, need_s: float, fn: Callable[[dict[str, Any]], None], skip: str | None = None) -> None:
        """Run ``fn(res)`` as phase ``name``; skipped when ``skip`` says why or the budget has no ``need_s`` left."""
        from worldmill.gpu_runner.devices import PeakMemory  # noqa: PLC0415

        need = 0.0 if self.tiny else need_s
        if skip is None and self.args.phases and name not in self.args.phases:
            skip = "not asked for (--phases)"
        if skip is None and self.left() < need:
            skip = f"budget: {self.left():.0f} s left, needs ~{need:.0f} s"
        if skip is not None:
            self.report["phases"][name] = {"status": "skipped", "reason": skip}
            self.save()
            print(f"{name}: skipped ({skip})", flush=True)
            return
        res: dict[str, Any] = {}
        started = time.perf_counter()
        with PeakMemory(self.device) as peak:
            try:
                fn(res)
                res["status"] = "ok"
            except Exception as exc:  # a bench reports and goes on
                res |= {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:1500],
                        "trace": traceback.format_exc()[-3000:]}  # fmt: skip
            self.sync()
        res["wall_s"] = round(time.perf_counter() - started, 3)
        res["peak_bytes"], res["peak_kind"] = peak.bytes, peak.kind
        self.report["phases"][name] = res
        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
        self.save()
        brief = {k: v for k, v in res.items() if k != "trace"}
        print(f"{name}: {json.dumps(brief, default=str)[:600]}", flush=True)

    def config(self, **kw: Any) -> Any:
        from worldmill.gpu_runner.backends import BackendConfig  # noqa: PLC0415

        return BackendConfig(
            checkpoint_root=self.work, device=self.device, safety_checker=False, shared=self.shared, **kw
        )

    def backend(self, model: str, config: Any) -> Any:
        from worldmill.contracts.cards import ControlType  # noqa: PLC0415
        from worldmill.contracts.generation import ExecutionSignature  # noqa: PLC0415
        from worldmill.gpu_runner.backends import create_backend  # noqa: PLC0415

        if model == PREDICT:
            sig = ExecutionSignature(model=PREDICT, checkpoint="rand-predict")
        else:
            sig = ExecutionSignature(model=TRANSFER, checkpoint="rand-transfer", controls=(ControlType.EDGE,))
        return create_backend(sig, config)

    def shared_module(self, backend: Any, prefix: str) -> Any:
        """A component the backend holds, found by its shared key (``transformer:…``, ``vae:…``)."""
        keys = [k for k in backend.memory_parts() if k.startswith(prefix + ":")]
        if not keys:
            raise RuntimeError(f"the backend holds no {prefix}: {sorted(backend.memory_parts())}")
        return self.shared.peek(keys[0])

    def chunk(self, size: tuple[int, int], **kw: Any) -> Any:
        from worldmill.gpu_runner.backends import ChunkRequest  # noqa: PLC0415

        fields: dict[str, Any] = {
            "prompt": PROMPT, "negative_prompt": None, "seed": 1, "frames": self.sizes.frames, "width": size[1], "height": size[0],
            "guidance": GUIDANCE, "steps": FULL_STEPS, "fps": 16.0,
        }  # fmt: skip
        return ChunkRequest(**(fields | kw))

    def step_times(self, backend: Any, request: Any, measure: int) -> dict[str, Any]:
        """``measure`` denoising steps of ``request`` (scheduled for its full steps), stopped by ``Canceled``."""
        from worldmill.gpu_runner.backends import Canceled  # noqa: PLC0415

        stamps: list[float] = []

        def on_step(step: int, _steps: int) -> None:
            self.sync()
            stamps.append(time.perf_counter())
            if step >= measure:
                raise Canceled

        start = time.perf_counter()
        with contextlib.suppress(Canceled):
            backend.generate(request, on_step)
        if len(stamps) < min(measure, request.steps):
            raise RuntimeError(f"only {len(stamps)} of {measure} steps reported")
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        step_s = sum(gaps) / len(gaps) if gaps else stamps[0] - start
        return {
            "first_step_s": round(stamps[0] - start, 4),  # prompt encoding, latents, warm-up, one step
            "step_s": round(step_s, 4),
            "steps_timed": len(gaps) or 1,
            "projected_chunk_s": round(step_s * request.steps, 4),
        }

    # -- phases --------------------------------------------------------------------------------

    def env(self, res: dict[str, Any]) -> None:
        import diffusers  # noqa: PLC0415
        import transformers  # noqa: PLC0415

        from worldmill.gpu_runner.backends.torchvision_stand_in import apply_torchvision_stand_in  # noqa: PLC0415
        from worldmill.gpu_runner.devices import describe_device  # noqa: PLC0415

        info = describe_device(self.device)
        res["device"] = dataclasses.asdict(info)
        res["versions"] = {"python": platform.python_version(), "torch": self.torch.__version__,
                           "diffusers": diffusers.__version__, "transformers": transformers.__version__}  # fmt: skip
        res["torchvision_stand_in"] = apply_torchvision_stand_in()
        if self.device.startswith("cuda"):
            res["cudnn"] = self.torch.backends.cudnn.version()
        res |= {"what": f"{info.name}, {_fmt_bytes(info.total_bytes)}", "seconds": None}

    def build(self, res: dict[str, Any]) -> None:
        import diffusers as d  # noqa: PLC0415
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration  # noqa: PLC0415

        from tests.helpers.tiny_cosmos import SPECIAL_TOKENS, _tokenizer  # noqa: PLC0415
        from worldmill.gpu_runner.backends.diffusers_backend import PassThroughSafetyChecker  # noqa: PLC0415

        s, torch, dt = self.sizes, self.torch, self.torch.bfloat16

        def make(cls: Any, cfg: dict[str, Any], dtype: Any = dt) -> Any:
            with torch.device(self.device):  # random init straight on the device: seconds, not minutes
                return cls(**cfg).to(dtype).eval()

        torch.manual_seed(0)
        started = time.perf_counter()
        tok = _tokenizer()
        ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        hidden, layers = s.text
        te_cfg = Qwen2_5_VLConfig(
            text_config={"vocab_size": len(tok), "hidden_size": hidden, "intermediate_size": s.text_mlp,
                             "num_hidden_layers": layers, "num_attention_heads": s.text_heads[0],
                             "num_key_value_heads": s.text_heads[1], "max_position_embeddings": 1024,
                             "rope_scaling": {"mrope_section": list(s.mrope), "rope_type": "default"},
                             "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                             "pad_token_id": ids["<|endoftext|>"]},
            vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": hidden},
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        )  # fmt: skip
        parts: dict[str, Any] = {
            "text_encoder": make(Qwen2_5_VLForConditionalGeneration, {"config": te_cfg}), "tokenizer": tok,
            "vae": make(d.AutoencoderKLWan, s.vae, torch.float32),  # the converted checkpoints keep the VAE in fp32
            "scheduler": d.UniPCMultistepScheduler(use_karras_sigmas=True, use_flow_sigmas=True,
                                                prediction_type="flow_prediction", sigma_max=200.0, sigma_min=0.01),
            "safety_checker": PassThroughSafetyChecker(),
        }  # fmt: skip
        predict = d.Cosmos2_5_PredictBasePipeline(transformer=make(d.CosmosTransformer3DModel, _dit_config(s)), **parts)
        transfer = d.Cosmos2_5_TransferPipeline(
            transformer=make(d.CosmosTransformer3DModel, _dit_config(s) | s.img | {
                "controlnet_block_every_n": s.controlnet_every}),
            controlnet=make(d.CosmosControlNetModel, _controlnet_config(s)), **parts,
        )  # fmt: skip
        self.sync()
        res["build_s"] = round(time.perf_counter() - started, 2)
        res["params"] = {
            name: sum(p.numel() for p in module.parameters())
            for name, module in (("transformer", predict.transformer), ("transfer_transformer", transfer.transformer),
                                 ("controlnet", transfer.controlnet), ("text_encoder", parts["text_encoder"]),
                                 ("vae", parts["vae"]))
        }  # fmt: skip
        t = time.perf_counter()
        predict.save_pretrained(self.work / "rand-predict")
        root = self.work / "rand-transfer"
        transfer.save_pretrained(root)
        # Our layout (the hub's diffusers/general branch): no controlnet in the pipeline folder, one per type.
        index = json.loads((root / "model_index.json").read_text())
        index["controlnet"] = [None, None]
        (root / "model_index.json").write_text(json.dumps(index, indent=2))
        (root / "controlnets").mkdir()
        (root / "controlnet").rename(root / "controlnets" / "edge")
        res["save_s"] = round(time.perf_counter() - t, 2)
        res["folder_bytes"] = {p.name: _folder_bytes(p) for p in sorted(self.work.iterdir())}
        del predict, transfer, parts
        gc.collect()
        total = sum(res["folder_bytes"].values())
        res |= {"what": "build + save_pretrained both folders", "seconds": round(time.perf_counter() - started, 2),
                "notes": f"{total / GIB:.2f} GiB on disk; DiT {res['params']['transformer'] / 1e9:.3f} B params"}  # fmt: skip

    def setup(self, res: dict[str, Any]) -> None:
        backend = self.backend(PREDICT, self.config())
        t = time.perf_counter()
        backend.setup()
        res["setup_s"] = round(time.perf_counter() - t, 2)
        res["memory_bytes"] = backend.memory_bytes()
        res["describe"] = {k: v for k, v in backend.describe().items() if not k.startswith("version.")}
        self.predict = backend
        res |= {"what": "Predict backend.setup() (from_pretrained, bf16)", "seconds": res["setup_s"],
                "notes": f"holds {_fmt_bytes(res['memory_bytes'])}"}  # fmt: skip

    def attention(self, name: str) -> Callable[[dict[str, Any]], None]:
        def run(res: dict[str, Any]) -> None:
            backend = self.backend(PREDICT, self.config(attention_backend=name))
            transformer = None
            try:
                backend.setup()  # the transformer is shared: this sets its attention backend, loads nothing
                transformer = self.shared_module(backend, "transformer")
                res |= self.step_times(backend, self.chunk(self.sizes.hd), self.args.steps)
            finally:
                if transformer is not None and name != "native":
                    transformer.reset_attention_backend()  # the backend sets non-native ones only: back to native
                backend.close()
            if name == "native":
                self.native_step_s = res["step_s"]
            res |= {"what": f"s per {FULL_STEPS}-step {self.sizes.label} chunk, CFG (projected)",
                    "seconds": res["projected_chunk_s"],
                    "notes": f"{res['step_s']:.3f} s/step over {res['steps_timed']}; first step "
                             f"{res['first_step_s']:.2f} s"}  # fmt: skip

        return run

    def determinism(self, res: dict[str, Any]) -> None:
        import numpy as np  # noqa: PLC0415

        base = self.chunk(self.sizes.ld, steps=2, seed=7)
        t = time.perf_counter()
        a, b, c = (self.predict.generate(r, lambda *_: None) for r in (base, base, dataclasses.replace(base, seed=8)))
        res["same_seed_identical"] = bool(np.array_equal(a, b))
        res["other_seed_differs"] = not bool(np.array_equal(a, c))
        res["shape"] = list(a.shape)
        res |= {"what": f"3 x 2-step {base.width}x{base.height}/{base.frames}f calls",
                "seconds": round(time.perf_counter() - t, 3),
                "notes": f"same seed identical {res['same_seed_identical']}, "
                         f"other seed differs {res['other_seed_differs']}"}  # fmt: skip

    def vae(self, res: dict[str, Any]) -> None:
        from worldmill.gpu_runner.devices import PeakMemory  # noqa: PLC0415

        torch, (h, w), n = self.torch, self.sizes.hd, self.sizes.frames
        model = self.shared_module(self.predict, "vae")
        dtype = next(model.parameters()).dtype
        latent = (n - 1) // 4 + 1
        x = torch.rand(1, 3, n, h, w, device=self.device, dtype=dtype) * 2 - 1
        z = torch.randn(1, model.config.z_dim, latent, h // 8, w // 8, device=self.device, dtype=dtype)

        def encode() -> Any:
            return model.encode(x).latent_dist.mode()

        def decode() -> Any:
            return model.decode(z, return_dict=False)[0]

        for what, fn in (("encode", encode), ("decode", decode)):
            with PeakMemory(self.device) as peak, torch.inference_mode():
                self.sync()
                t = time.perf_counter()
                out = fn()
                self.sync()
                res[f"{what}_s"] = round(time.perf_counter() - t, 3)
            res[f"{what}_shape"] = list(out.shape)
            res[f"{what}_peak_bytes"] = peak.bytes
            del out
        res["dtype"] = str(dtype).removeprefix("torch.")
        res |= {"what": f"Wan VAE encode + decode {self.sizes.label}", "seconds": res["encode_s"] + res["decode_s"],
                "notes": f"encode {res['encode_s']:.2f} s / {_fmt_bytes(res['encode_peak_bytes'])}, "
                         f"decode {res['decode_s']:.2f} s / {_fmt_bytes(res['decode_peak_bytes'])}"}  # fmt: skip

    def transfer(self, res: dict[str, Any]) -> None:
        import numpy as np  # noqa: PLC0415

        from worldmill.gpu_runner.backends.base import VideoRequest  # noqa: PLC0415

        s = self.sizes
        (h, w), frames, chunk, overlap = s.sd, s.long_frames, s.chunk, 1
        chunks = 1 + -(-(frames - chunk) // (chunk - overlap))
        backend = self.backend(TRANSFER, self.config())
        try:
            t = time.perf_counter()
            backend.setup()
            res["setup_s"] = round(time.perf_counter() - t, 2)
            edges = (np.random.default_rng(0).random((frames, h, w, 1)) > 0.9).repeat(3, axis=3).astype(np.uint8) * 255
            request = VideoRequest(
                prompt=PROMPT, negative_prompt=None, seed=1, frames=frames, chunk_frames=chunk, overlap=overlap,
                chunks=chunks, width=w, height=h, guidance=GUIDANCE, steps=2, fps=16.0, controls={"edge": edges},
                control_weights={"edge": 0.8},
            )  # fmt: skip
            seen: list[tuple[int, int, int, int]] = []
            t = time.perf_counter()
            out = backend.generate_video(request, lambda *p: seen.append(p))
            res["generate_video_s"] = round(time.perf_counter() - t, 3)
        finally:
            backend.close()
        res["shape"] = list(out.shape)
        res["expected_shape"] = [frames, h, w, 3]
        res["chunks_planned"] = chunks
        res["chunks_reported"] = len({c for c, *_ in seen})
        res["chunks_total_reported"] = sorted({n for _, n, *_ in seen})
        res["progress_calls"] = len(seen)
        res |= {"what": f"generate_video {w}x{h}/{frames}f, chunk {chunk}, overlap {overlap}, 2 steps",
                "seconds": res["generate_video_s"],
                "notes": f"{res['chunks_reported']} chunks reported, shape {tuple(out.shape)}; "
                         f"setup {res['setup_s']:.1f} s"}  # fmt: skip

    def build_cosmos3(self, folder: Path, res: dict[str, Any]) -> None:
        """A random ``Cosmos3OmniPipeline`` (no sound tokenizer) saved into ``folder``: build and save seconds."""
        import diffusers as d  # noqa: PLC0415

        from tests.helpers.tiny_cosmos import _tokenizer  # noqa: PLC0415
        from worldmill.gpu_runner.backends.diffusers_backend import PassThroughSafetyChecker  # noqa: PLC0415

        s, torch = self.sizes, self.torch
        torch.manual_seed(0)
        started = time.perf_counter()
        tok = _tokenizer()
        cfg = s.c3_dit | {"vocab_size": s.c3_dit["vocab_size"] or len(tok)}
        default = torch.get_default_dtype()
        try:  # created straight in bf16 on the device: no fp32 copy of its ~16 B parameters
            torch.set_default_dtype(torch.bfloat16)
            with torch.device(self.device):
                transformer = d.Cosmos3OmniTransformer(**cfg).eval()
        finally:
            torch.set_default_dtype(default)
        with torch.device(self.device):
            vae = d.AutoencoderKLWan(**s.c3_vae).to(torch.float32).eval()  # the VAE kept in fp32, as for 2.5
        scheduler = d.UniPCMultistepScheduler(use_karras_sigmas=True, use_flow_sigmas=True,
                                              prediction_type="flow_prediction", sigma_max=200.0, sigma_min=0.01)  # fmt: skip
        pipe = d.Cosmos3OmniPipeline(transformer=transformer, text_tokenizer=tok, vae=vae, scheduler=scheduler,
                                     safety_checker=PassThroughSafetyChecker())  # fmt: skip
        self.sync()
        res["build_s"] = round(time.perf_counter() - started, 2)
        res["params"] = {"transformer": sum(p.numel() for p in transformer.parameters()),
                         "vae": sum(p.numel() for p in vae.parameters())}  # fmt: skip
        t = time.perf_counter()
        pipe.save_pretrained(folder)
        res["save_s"] = round(time.perf_counter() - t, 2)
        res["folder_bytes"] = _folder_bytes(folder)
        del pipe, transformer, vae
        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()

    def cosmos3(self, res: dict[str, Any]) -> None:
        """Cosmos3-Nano: build + save a random pipeline folder, load it through the backend, time denoising steps."""
        from worldmill.contracts.generation import ExecutionSignature  # noqa: PLC0415
        from worldmill.gpu_runner.backends import BackendConfig, create_backend  # noqa: PLC0415
        from worldmill.gpu_runner.devices import PeakMemory  # noqa: PLC0415

        s, folder, backend = self.sizes, self.work / COSMOS3_FOLDER, None
        try:
            self.build_cosmos3(folder, res)
            sig = ExecutionSignature(model=COSMOS3, checkpoint=COSMOS3_FOLDER, backend="cosmos3")
            backend = create_backend(
                sig, BackendConfig(checkpoint_root=self.work, device=self.device, safety_checker=False)
            )
            t = time.perf_counter()
            backend.setup()  # from_pretrained, hashing, moving to the device
            res["setup_s"] = round(time.perf_counter() - t, 2)
            res["memory_bytes"] = backend.memory_bytes()
            (h, w), frames = s.c3_hd, s.c3_frames
            request = self.chunk((h, w), frames=frames, guidance=COSMOS3_GUIDANCE, fps=COSMOS3_FPS)
            with PeakMemory(self.device) as peak:
                res |= self.step_times(backend, request, self.args.steps)
                self.sync()
            res["generate_peak_bytes"], res["generate_peak_kind"] = peak.bytes, peak.kind
        finally:
            if backend is not None:
                backend.close()
            shutil.rmtree(folder, ignore_errors=True)  # ~32 GB at full size: the disk is not endless
        res |= {"what": f"Cosmos3-Nano s per {FULL_STEPS}-step {w}x{h}/{frames}f chunk, guidance "
                        f"{COSMOS3_GUIDANCE:g} (projected)",
                "seconds": res["projected_chunk_s"],
                "notes": f"{res['step_s']:.3f} s/step over {res['steps_timed']}; first step {res['first_step_s']:.2f} s; "
                         f"generate peak {_fmt_bytes(res['generate_peak_bytes'])}; "
                         f"{res['params']['transformer'] / 1e9:.3f} B params; build {res['build_s']:.1f} s, "
                         f"save {res['save_s']:.1f} s, setup {res['setup_s']:.1f} s"}  # fmt: skip

    def compile(self, res: dict[str, Any]) -> None:
        backend = self.backend(PREDICT, self.config(compile="regional"))
        try:
            backend.setup()  # compiles the blocks of the shared transformer (lazily, at the first call)
            res |= self.step_times(backend, self.chunk(self.sizes.hd), self.args.steps)
        finally:
            backend.close()
        res["first_call_compile_s"] = res["first_step_s"]
        if self.native_step_s:
            res["speedup_vs_native"] = round(self.native_step_s / res["step_s"], 3)
        res |= {"what": f"s per {FULL_STEPS}-step {self.sizes.label} chunk, regional compile (projected)",
                "seconds": res["projected_chunk_s"],
                "notes": f"{res['step_s']:.3f} s/step; first call (compile) {res['first_step_s']:.1f} s"
                         + (f"; x{res['speedup_vs_native']} vs native" if "speedup_vs_native" in res else "")}  # fmt: skip

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        on_cpu = None if self.device.startswith("cuda") else "not on the CPU"
        try:
            self.phase("env", 0, self.env)
            self.phase("build", NEEDS_GPU["build"], self.build)
            built = self.report["phases"]["build"].get("status") == "ok"
            self.phase("setup", NEEDS_GPU["setup"], self.setup, None if built else "no checkpoint folders")
            ready = self.predict is not None
            no_predict = None if ready else "no Predict backend"
            self.phase("attn:native", NEEDS_GPU["attn"], self.attention("native"), no_predict)
            self.phase("determinism", NEEDS_GPU["determinism"], self.determinism, no_predict)
            self.phase("vae", NEEDS_GPU["vae"], self.vae, no_predict)
            self.phase("transfer", NEEDS_GPU["transfer"], self.transfer, None if built else "no checkpoint folders")
            self.phase("cosmos3", NEEDS_GPU["cosmos3"], self.cosmos3)
            for name in ATTENTION_BACKENDS[1:]:
                why = no_predict or (None if on_cpu is None or name in CPU_ATTENTION_BACKENDS else
                                     f"{on_cpu}: CUDA-only attention kernels")  # fmt: skip
                self.phase(f"attn:{name}", NEEDS_GPU["attn"], self.attention(name), why)
            self.phase(
                "compile", NEEDS_GPU["compile"], self.compile, no_predict or (on_cpu and "compile skipped on the CPU")
            )
        finally:
            if self.predict is not None:
                self.predict.close()
            if self.args.keep:
                print(f"kept {self.work}", flush=True)
            else:
                shutil.rmtree(self.work, ignore_errors=True)
        self.report["summary"] = self.summary()
        self.report["total_s"] = round(time.monotonic() - self.t0, 1)
        self.save()
        return self.report

    def summary(self) -> dict[str, Any]:
        p = self.report["phases"]
        attn = {
            name: (p[f"attn:{name}"].get("projected_chunk_s") if p[f"attn:{name}"].get("status") == "ok"
                   else p[f"attn:{name}"].get("error") or p[f"attn:{name}"].get("reason"))
            for name in ATTENTION_BACKENDS
        }  # fmt: skip
        ok = {k: v for k, v in attn.items() if isinstance(v, float)}
        return {
            "s_per_35_step_chunk": attn,
            "best_attention": min(ok, key=ok.__getitem__) if ok else None,
            "compile_s_per_35_step_chunk": p["compile"].get("projected_chunk_s"),
            "compile_first_call_s": p["compile"].get("first_call_compile_s"),
            "vae_encode_s": p["vae"].get("encode_s"),
            "vae_decode_s": p["vae"].get("decode_s"),
            "transfer_2chunk_s": p["transfer"].get("generate_video_s"),
            "transfer_chunks_reported": p["transfer"].get("chunks_reported"),
            "cosmos3_s_per_35_step_chunk": p["cosmos3"].get("projected_chunk_s"),
            "cosmos3_step_s": p["cosmos3"].get("step_s"),
            "cosmos3_peak_bytes": p["cosmos3"].get("generate_peak_bytes"),
            "deterministic": [p["determinism"].get("same_seed_identical"), p["determinism"].get("other_seed_differs")],
            "errors": sorted(k for k, v in p.items() if v.get("status") == "error"),
            "skipped": sorted(k for k, v in p.items() if v.get("status") == "skipped"),
        }


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(
        title=f"Cosmos 2.5 diffusers path on {report['device']}{' (tiny: toy sizes)' if report['tiny'] else ''}, "
        f"random weights, bf16",
        title_justify="left",
        caption=f"attn/compile/cosmos3: {report['sizes']['steps_measured']} steps timed, projected to {FULL_STEPS} "
        "(CFG included, VAE decode not); peak memory: CUDA peak allocated, on the CPU the process's peak RSS",
        caption_justify="left",
    )
    for col in ("phase", "what", "seconds", "peak memory", "notes"):
        table.add_column(col, justify="right" if col in ("seconds", "peak memory") else "left")
    for name, res in report["phases"].items():
        status = res.get("status")
        if status == "skipped":
            table.add_row(name, "-", "-", "-", f"skipped: {res['reason']}")
            continue
        if status == "error":
            table.add_row(name, res.get("what", "-"), f"{res['wall_s']:.2f}", _fmt_bytes(res.get("peak_bytes")),
                          f"error: {res['error'][:200]}")  # fmt: skip
            continue
        seconds = res.get("seconds")
        table.add_row(name, str(res.get("what", "")), "-" if seconds is None else f"{seconds:.3f}",
                      _fmt_bytes(res.get("peak_bytes")), str(res.get("notes", "")))  # fmt: skip
    Console(width=180).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--tiny", action="store_true", help="the same code on the CPU at toy sizes (CI)")
    add("--budget-s", type=float, default=float(os.environ.get("BENCH_GPU_BUDGET_S", "540")),
        help="time budget in seconds; phases that no longer fit are skipped (default $BENCH_GPU_BUDGET_S or 540)")  # fmt: skip
    add("--steps", type=int, default=3, help="denoising steps timed per attention backend (default 3, at least 2)")
    add("--work", default=None, help="parent folder of the temporary checkpoint folders (default: the temp dir)")
    add("--keep", action="store_true", help="keep the checkpoint folders (printed)")
    add(
        "--phases",
        default="",
        help="comma-separated phases to run (default: all), e.g. env,build,setup,attn:native,compile",
    )
    args = parser.parse_args(argv)
    args.phases = frozenset(filter(None, args.phases.split(",")))
    args.steps = max(2, args.steps)

    import torch  # noqa: PLC0415

    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA device: run with --tiny for the CPU toy run", file=sys.stderr)
        return 2
    report = Bench(args).run()
    print_table(report)
    print(json.dumps(report, separators=(",", ":"), default=str))
    return 1 if report["summary"]["errors"] and args.tiny else 0


if __name__ == "__main__":
    raise SystemExit(main())
