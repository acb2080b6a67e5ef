"""What a model asks of the hardware: parameters, FLOPs per token and GPU memory, from its config.

`arzan estimate` must answer before anything is downloaded, so everything here is arithmetic on
a config.json (hidden, intermediate, layers, heads, vocab) and the recipe; nothing loads weights.
The formulas are the usual dense-transformer counts; their constants and what they were checked
against are written next to them, because a memory estimate is only as good as its calibration.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GB = 1e9


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that cost, and where they were read from."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    head_dim: int
    source: str = "config"

    @classmethod
    def from_config(cls, cfg: dict[str, Any], source: str = "config") -> ModelShape:
        cfg = cfg.get("text_config", cfg)  # multimodal wrappers keep the LM under text_config
        h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        return cls(hidden=h, intermediate=int(cfg["intermediate_size"]), layers=int(cfg["num_hidden_layers"]),
                   heads=heads, kv_heads=int(cfg.get("num_key_value_heads") or heads), vocab=int(cfg["vocab_size"]),
                   tied=bool(cfg.get("tie_word_embeddings", False)),
                   head_dim=int(cfg.get("head_dim") or h // heads), source=source)

    @classmethod
    def from_dir(cls, path: str | Path) -> ModelShape:
        p = Path(path) / "config.json"
        return cls.from_config(json.loads(p.read_text(encoding="utf-8")), source=str(p))

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of every projection in one layer; LoRA's cost depends on these, not on the total."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def total_params(self) -> int:
        norms = self.layers * 2 * self.hidden + self.hidden
        head = 0 if self.tied else self.embedding_params
        return self.embedding_params + self.layers * self.layer_linear_params + norms + head

    @property
    def matmul_params(self) -> int:
        """Weights a token is multiplied by: every linear layer plus the LM head (the embedding is a lookup)."""
        return self.layers * self.layer_linear_params + self.embedding_params

    def lora_params(self, r: int, targets: list[str] | str) -> int:
        shapes = self.linear_shapes()
        names = list(shapes) if targets == "all-linear" else [t for t in targets if t in shapes]
        return self.layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in names)


def train_flops_per_token(shape: ModelShape, context: float, lora_params: int, checkpointing: bool) -> float:
    """FLOPs the hardware executes per trained-through token (HFU-style: recomputation included).

    LoRA freezes the base, so backward computes activation gradients (2N) but no weight gradients:
    4N per token instead of full fine-tuning's 6N, plus another forward (2N) when activations are
    recomputed. Causal attention adds 2*d*context per layer forward (QK^T and AV over, on average,
    half the context) and twice that backward. LoRA's own matmuls cost 6 per adapter parameter.
    """
    fwd = 2.0 * shape.matmul_params
    attn = 2.0 * shape.layers * shape.heads * shape.head_dim * context
    passes = 3 if checkpointing else 2  # forward, backward(activations) [, recompute]
    return fwd * passes + attn * (passes + 1) + 6.0 * lora_params


def model_flops_per_token(shape: ModelShape, context: float, lora_params: int) -> float:
    """The same count without recomputation: the numerator of MFU, comparable across settings."""
    return train_flops_per_token(shape, context, lora_params, checkpointing=False)


def eval_flops_per_token(shape: ModelShape, context: float) -> float:
    return 2.0 * shape.matmul_params + 2.0 * shape.layers * shape.heads * shape.head_dim * context


# --- memory -------------------------------------------------------------------------------------
# The loss's logits. Unsloth's fused cross-entropy holds the bf16 logits of the whole micro-batch and
# never materialises fp32 copies: 2 B per logit. On the hf path (GPU and CPU alike) TRL 1.14's
# SFTTrainer defaults to loss_type "chunked_nll": lm_head is applied to 256 labelled tokens at a time
# under checkpointing, so at most one chunk's fp32 logits, log-softmax, the entropy's exp and their
# gradient (~16 B per element) are alive, whatever the sequence length (trl/trainer/sft_trainer.py,
# _chunked_cross_entropy_loss). Full hf logits, as older stacks kept them, cost ~10 B per logit: that
# reproduced Qwen-7B LoRA's +2.08 MB per token of sequence on an A100 (github.com/QwenLM/Qwen README,
# "Profiling of Memory and Speed"), which TRL's chunking now avoids.
UNSLOTH_LOGIT_BYTES = 2.0
CHUNKED_LOSS_TOKENS, CHUNKED_LOSS_BYTES = 256, 16.0
CUDA_CONTEXT_GB = 1.0  # CUDA context + cuBLAS workspaces: outside torch's allocator, inside the card
FRAGMENTATION = 1.10  # the caching allocator reserves more than it hands out
NF4_BYTES = 0.5 + 0.127 / 8  # 4 bits + double-quantized absmax (~0.127 bit/param): 0.516 B/param


@dataclass(frozen=True)
class Vram:
    """Peak memory of a training step, by part, in GB (1e9 bytes)."""

    weights: float
    adapter: float  # LoRA weights + gradients + AdamW moments (fp32)
    activations: float
    logits: float
    overhead: float  # CUDA context + allocator slack; zero on a CPU
    tokens_per_micro_batch: int
    notes: tuple[str, ...] = ()
    checkpointing: bool = True  # the gradient-checkpointing setting these activations are for

    @property
    def allocated(self) -> float:
        """Comparable with torch.cuda.max_memory_allocated()."""
        return self.weights + self.adapter + self.activations + self.logits

    @property
    def total(self) -> float:
        """What must fit on the card."""
        return self.allocated + self.overhead


def layer_activation_elements(shape: ModelShape) -> int:
    """Tensors one decoder layer keeps for backward, per token, in elements (bf16 -> x2 bytes).

    Attention block: RMSNorm's fp32 input and output (3h), LoRA's input and its fp32 cast (3h),
    q, k, v (h + 2 kv), attention output (h), o_proj LoRA input in fp32 (2h). MLP block: norm (3h),
    LoRA input cast (2h), gate, up, act(gate), product (4i) and down_proj's LoRA input cast (2i).
    """
    h, kv, i = shape.hidden, shape.kv_heads * shape.head_dim, shape.intermediate
    return 15 * h + 2 * kv + 6 * i


def estimate_vram(shape: ModelShape, *, lora_params: int, micro_batch_tokens: int, qlora: bool,
                  checkpointing: bool, backend: str = "hf", device: str = "cuda",
                  extra_trainable: int = 0) -> Vram:
    """Peak training memory. ``micro_batch_tokens`` is the worst case: batch x max_length.

    ``extra_trainable``: parameters of ``modules_to_save`` (full trainable copies, e.g. embeddings).
    """
    on_cpu = device == "cpu"
    act_bytes = 4 if on_cpu else 2  # CPU training runs in fp32
    notes = []
    if qlora and not on_cpu:
        quantized = shape.layers * shape.layer_linear_params
        # embeddings, head and norms are not quantized: unsloth keeps them 16-bit, while peft's
        # prepare_model_for_kbit_training (the hf path) casts them to float32
        weights = quantized * NF4_BYTES + (shape.total_params - quantized) * (2 if backend == "unsloth" else 4)
    else:
        weights = shape.total_params * (4 if on_cpu else 2)
    adapter = (lora_params + extra_trainable) * 16 + extra_trainable * 2
    per_layer = layer_activation_elements(shape) * act_bytes
    if checkpointing:
        saved = 0 if backend == "unsloth" else shape.layers * shape.hidden * act_bytes  # unsloth offloads to RAM
        per_token = saved + per_layer  # layer inputs kept, one layer recomputed at a time
        if backend == "unsloth":
            notes.append("unsloth gradient checkpointing offloads layer inputs to CPU RAM")
    else:
        per_token = shape.layers * per_layer
    if backend == "unsloth" and not on_cpu:
        logits = micro_batch_tokens * shape.vocab * UNSLOTH_LOGIT_BYTES
    else:
        logits = min(micro_batch_tokens, CHUNKED_LOSS_TOKENS) * shape.vocab * CHUNKED_LOSS_BYTES
    overhead = 0.0 if on_cpu else CUDA_CONTEXT_GB * GB
    allocated = weights + adapter + per_token * micro_batch_tokens + logits
    if not on_cpu:
        overhead += allocated * (FRAGMENTATION - 1)
    return Vram(weights=weights / GB, adapter=adapter / GB, activations=per_token * micro_batch_tokens / GB,
                logits=logits / GB, overhead=overhead / GB, tokens_per_micro_batch=micro_batch_tokens,
                notes=tuple(notes), checkpointing=checkpointing)


def estimate_vram_both(shape: ModelShape, *, checkpointing: bool, **kw: Any) -> tuple[Vram, Vram]:
    """(the run's setting, the other one): peak memory with and without gradient checkpointing, so a
    user sees what turning it off would cost (speed) or need (memory) before renting a card."""
    return (estimate_vram(shape, checkpointing=checkpointing, **kw),
            estimate_vram(shape, checkpointing=not checkpointing, **kw))


def size_label(params: int) -> str:
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.1f}M"


def nearest_by_size(shapes: dict[str, ModelShape], params: float) -> str:
    """The shipped config closest in size (log scale): a stand-in when the real config is out of reach."""
    return min(shapes, key=lambda k: abs(math.log(shapes[k].total_params / params)))
