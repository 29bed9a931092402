"""Random-weight models with the architecture of Gemma 3 (for exactness tests and scaling benchmarks).

:func:`gemma3_shaped` builds a ``HookedTransformer`` with everything that makes Gemma 3
special for factlens's code paths: RMS norms before *and* after each sub-layer, query/key
norms, grouped-query attention with one key/value head, local (sliding-window) and global
layers with two rotary bases, a gated ``gelu_pytorch_tanh`` MLP and an untied unembedding.
The sizes are free: the defaults are tiny (tests), :data:`GEMMA3_270M` and
:data:`GEMMA3_1B` are the real shapes (benchmarks/main_job.py ``--scaling``).

Example:
    >>> m = gemma3_shaped()
    >>> m.cfg.use_qk_norm, m.cfg.n_key_value_heads, m.cfg.attn_types[:3]
    (True, 1, ['local', 'local', 'global'])
"""

from __future__ import annotations

from typing import Any

import torch

from factlens.testing.tiny import build_hooked, builtin_words, seeded
from factlens.testing.tokenizer import word_tokenizer

__all__ = ["gemma3_shaped", "GEMMA3_270M", "GEMMA3_1B", "GEMMA2_9B", "LLAMA3_8B"]

#: The sizes of Gemma 3 270M (``google/gemma-3-270m``).
GEMMA3_270M: dict[str, Any] = dict(n_layers=18, d_model=640, n_heads=4, d_head=256, d_mlp=2048, d_vocab=262144,
                                   global_every=6)
#: The sizes of Gemma 3 1B (``google/gemma-3-1b-pt``).
GEMMA3_1B: dict[str, Any] = dict(n_layers=26, d_model=1152, n_heads=4, d_head=256, d_mlp=6912, d_vocab=262144,
                                 global_every=6)
#: The sizes of Gemma-2-9B (``google/gemma-2-9b``: 8 key/value heads, local and global layers
#: alternating) on Gemma 3's architecture (QK norms instead of Gemma 2's logit soft-capping):
#: the paper's model's blocks (8.3B parameters) and memory, for the scaling benchmark on a GPU; the
#: unembedding is untied here (10.2B in all, against Gemma-2-9B's 9.2B with its tied embedding).
GEMMA2_9B: dict[str, Any] = dict(n_layers=42, d_model=3584, n_heads=16, n_kv_heads=8, d_head=256, d_mlp=14336,
                                 d_vocab=256000, global_every=2)
#: The sizes of Llama-3-8B (``meta-llama/Meta-Llama-3-8B``: 8 key/value heads, every layer global)
#: on Gemma 3's architecture (the same parameter count; Llama's norms and activation differ).
LLAMA3_8B: dict[str, Any] = dict(n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, d_head=128, d_mlp=14336,
                                 d_vocab=128256, global_every=1)


def gemma3_shaped(*, n_layers: int = 3, d_model: int = 32, n_heads: int = 2, d_head: int = 8, d_mlp: int = 64,
                  d_vocab: int | None = None, global_every: int = 3, window_size: int = 4, n_ctx: int = 256,
                  seed: int = 0, dtype: torch.dtype = torch.float32, init_range: float = 0.02, n_kv_heads: int = 1,
                  device: str | torch.device = "cpu"):
    """A random ``HookedTransformer`` with Gemma 3's architecture and the given sizes.

    Args:
        n_layers, d_model, n_heads, d_head, d_mlp: Sizes.
        n_kv_heads: Key/value heads (1, as Gemma 3 270M/1B; 8 for the Gemma-2-9B / Llama-3-8B sizes).
        d_vocab: Vocabulary size (``None``: the word tokenizer's; larger values pad the
            embedding with ids the tokenizer never produces, to get a real model's memory).
        global_every: Every ``global_every``-th layer is global, the others local.
        window_size: Sliding window of the local layers (Gemma 3: 512; small here so that
            tests cross it).
        n_ctx: Context length.
        seed: Weight seed (global RNG states are left as they were).
        dtype: Parameter dtype.
        init_range: Standard deviation of the normal weight initialization.
        device: Where the model lives. On the CPU the weights are TransformerLens's own
            initialization; elsewhere (a GPU) the parameters are made and drawn there, with the
            same distributions from a generator of that device (:func:`_build_on`): other values
            than the CPU's for the same seed, and minutes less at the paper's sizes (drawing
            10B weights on the CPU, serially, took 366 s of an H200 run's 580).
    """
    from transformer_lens import HookedTransformerConfig

    tok = word_tokenizer(builtin_words())
    attn_types = ["global" if (i + 1) % global_every == 0 else "local" for i in range(n_layers)]
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_head, d_mlp=d_mlp, n_ctx=n_ctx,
        d_vocab=max(d_vocab or 0, len(tok)), act_fn="gelu_pytorch_tanh", gated_mlp=True, n_key_value_heads=n_kv_heads,
        normalization_type="RMSPre", final_rms=True, use_normalization_before_and_after=True, use_qk_norm=True,
        positional_embedding_type="rotary", rotary_dim=d_head, rotary_base=1_000_000, rotary_base_local=10_000,
        use_local_attn=True, window_size=window_size, attn_types=attn_types, attn_scale=float(d_head) ** 0.5,
        default_prepend_bos=True, eps=1e-6, init_weights=True, initializer_range=init_range, seed=None,
        device="cpu", dtype=dtype, model_name="factlens-gemma3-shaped")
    if torch.device(device).type != "cpu":
        return _build_on(cfg, tok, torch.device(device), seed=seed, init_range=init_range)
    with seeded(seed):
        model = build_hooked(cfg, tok)
        with torch.no_grad():  # norm weights random around 1, so that the norms are exercised
            for name, p in model.named_parameters():
                if name.endswith(".w"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
    cfg.seed = seed
    return model.eval()


def _build_on(cfg, tok, device: torch.device, *, seed: int, init_range: float):
    """:func:`gemma3_shaped`'s model made directly on ``device``: TransformerLens's empty
    parameters are created there (``init_weights`` off), then every ``W_*`` is drawn from
    N(0, init_range) and every norm weight from N(1, 0.1), as the CPU path's initialization,
    with a generator of ``device`` seeded with ``seed`` (no global RNG state is touched)."""
    cfg.init_weights = False
    with torch.device(device):
        model = build_hooked(cfg, tok)
    # buffers TransformerLens made on cfg.device; updates cfg.device (a string keeps the index: cuda:1)
    model.to(str(device), print_details=False)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "W_" in name:
                p.normal_(0.0, init_range, generator=gen)
            elif name.endswith(".w"):
                p.normal_(1.0, 0.1, generator=gen)
    cfg.seed, cfg.init_weights = seed, True  # drawn: a model rebuilt from this config is drawn too
    return model.eval()
