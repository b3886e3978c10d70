"""FlashAttention-2's forward on the tiles its release runs (``flash2 --tiles release``).

The FlashAttention-2 paper does not derive its tiles from M: "we manually tune for each
head dimension, since there are essentially only 4 choices for block sizes" (§3.3). The
release writes the choice down per head dimension, in ``run_mha_fwd_hdim*`` of
csrc/flash_attn/src/flash_fwd_launch_template.h (the same at v2.0.0, 4f285b35, the
version the FlashAttention-2 paper measured; at v2.6.0, what the FlashAttention-3 paper
compared with; and at 2.8.4, 0251105a, whose table this module follows), as kernel traits
``Flash_fwd_kernel_traits<d, B_r, B_c, warps, ...>``, fp16 and bf16:

    d       sm80, sm90                              sm86, sm89 (99 KiB a CTA)
    32      128 x 128, 4 warps                      the same
    64      128 x 128, 4; with dropout 128 x 64     the same
    96      128 x 64, 4                             non-causal 128 x 64, causal 64 x 64
    128     128 x 64, 4; with dropout 128 x 32      non-causal 128 x 32, causal 64 x 64;
                                                    with dropout 128 x 32
    192     128 x 64, 8; with dropout 64 x 64, 4    the same
    256     128 x 64, 8 where a CTA may use 2 d (128 + 2·64) bytes of shared memory and an
            SM holds less than 4 d (64 + 2·64) (the A100); 64 x 64, 4 otherwise (the H100,
            whose 228 KiB hold two such CTAs, and the sm8x GPUs)

Other head dims run the next one up, padded (flash-attn's ``HEADDIM_SWITCH``); the
simulator counts the head dim it is given, so ``--tiles release`` takes these six only.
The tile plan of ``--tiles paper`` (the default: the largest tiles whose Q, K, V fit M and
whose accumulators let two CTAs share an SM) gives the same tiles at d = 32, 64 and 128 on
the A100 and H100, and larger ones at d = 96 (128 x 128) and 256 (64 x 128, one CTA an
SM), with 4 warps everywhere.
"""
from __future__ import annotations

from algorithms.base import PlanError
from algorithms.kernels.common import runs_sm80_kernels

HEAD_DIMS = (32, 64, 96, 128, 192, 256)
DTYPES = ("fp16", "bf16")


def forward_tiles(head_dim: int, gpu, causal: bool, dropout: bool) -> tuple[int, int, int]:
    """(B_r, B_c, warps) of the release's forward kernel for this head dim on this GPU."""
    sm8x = not runs_sm80_kernels(gpu)
    if head_dim == 32:
        return 128, 128, 4
    if head_dim == 64:
        return (128, 64, 4) if dropout else (128, 128, 4)
    if head_dim == 96:
        return (64, 64, 4) if sm8x and causal else (128, 64, 4)
    if head_dim == 128:
        if dropout:
            return 128, 32, 4
        if sm8x:
            return (64, 64, 4) if causal else (128, 32, 4)
        return 128, 64, 4
    if head_dim == 192:
        return (64, 64, 4) if dropout else (128, 64, 8)
    if head_dim == 256:
        if (gpu.smem_bytes_per_block >= 2 * head_dim * (128 + 2 * 64)
                and gpu.smem_bytes_per_sm < 4 * head_dim * (64 + 2 * 64)):
            return 128, 64, 8
        return 64, 64, 4
    raise unknown_head_dim(head_dim)


def unknown_head_dim(head_dim: int) -> PlanError:
    return PlanError(f"flash2 --tiles release: the release runs head dims "
                     f"{', '.join(map(str, HEAD_DIMS))} (others padded to the next one), not "
                     f"{head_dim}; use one of them as --head-dim, or --tiles paper")


def check_workload(wl) -> None:
    """What the release's forward has no kernel for, refused with the fix."""
    if wl.dtype not in DTYPES:
        raise PlanError(f"flash2 --tiles release: the release runs fp16 and bf16 only, not "
                        f"{wl.dtype}; use --dtype fp16 or bf16, or --tiles paper")
    if wl.head_dim not in HEAD_DIMS:
        raise unknown_head_dim(wl.head_dim)
