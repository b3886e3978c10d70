"""What one tile step of an attention kernel waits for beyond its pipes' busy time.

The timing model prices the pipes by how long each is busy (``hwmodels.timing``). A tile
step is also a chain of dependent instructions: the softmax cannot start until the last MMA
of S has retired, the exp until the row max is known, the P V product until P is packed,
and where a CTA's warps split the keys between them ("split-K", FlashAttention-2 §3.3) until
the warps have passed their row statistics and partial outputs through shared memory. Each
link waits one instruction latency that no pipe is busy for:

    mma   a GEMM's last MMA, issue to result
    smem  a shared-memory load the next instruction needs (the first operand fragment of a
          GEMM, a value another warp wrote there; the store before it is fire-and-forget)
    sfu   an exp2
    fp    a dependent fp32 max, add, multiply or conversion
    shfl  a warp shuffle round (a row's max or sum across the quad of threads holding it)
    bar   a barrier the CTA's warps meet at (``__syncthreads``; FlashAttention-3's named
          barrier between warpgroups)

The GPU description gives each a latency in clocks (``hwmodels.gpus``): the first four from
Accel-Sim's tuned configurations ([ACCEL-SIM]), the shuffle round and the barrier from
published microbenchmarks of those instructions ([KW-SHFL], [AMORA-BAR], [GMB-GA100]; a
barrier costs more the more warps meet at it); ``benchmarks/gpu_microbench.py`` measures
all six on the GPU at hand.

Where a chain of ``n`` dependent fp32 operations reduces a row in a thread's registers, that
is ``n`` fp events: FlashAttention-2's ``thread_reduce_`` and the v1 release's
``Softmax::reduce`` walk a thread's values of a row one after the other.

The values of one row a thread holds: an ``mma.sync`` m16n8 accumulator gives each thread two
values of a row per 8 columns, so a warp spanning all B_c keys of its rows holds B_c / 4 a
row per thread (FlashAttention-2; FlashAttention-3's m64nN ``wgmma`` accumulator alike, N / 4),
and the v1 release's 4 warps, each spanning a quarter of the keys, B_c / 16.

The v1 release also stages global loads through registers inside a step (``StepLoad``): the
next step's Q_i and dO_i are loaded into registers and stored to shared memory a few GEMMs
later, its forward reads its fp32 O_i back to rescale it and its loop kernel its fp32 dQ_i
to add the step's part to it; what of
each load's L2 or DRAM latency the work between issue and use does not cover waits on the
chain. FlashAttention-2 and -3 copy their tiles with cp.async or TMA a whole tile ahead and
declare none.

Pricing only: nothing here changes a count. ``KernelRecord.step_events`` holds the result,
``chain_steps`` the steps it is paid on, ``step_loads`` the staged loads.
"""
from __future__ import annotations

import numpy as np

from hwmodels.memory import StepLoad

SPLIT_K_WARPS = 4       # the v1 release's warps, each a quarter of the keys


def events(mma: int = 0, smem: int = 0, sfu: int = 0, fp: int = 0, shfl: int = 0,
           bar: int = 0) -> tuple:
    """The (event, count) pairs of ``KernelRecord.step_events``."""
    return tuple((name, float(n)) for name, n in
                 (("mma", mma), ("smem", smem), ("sfu", sfu), ("fp", fp), ("shfl", shfl),
                  ("bar", bar)) if n)


def row_values_per_thread(block_k: int, warps_across_keys: int = 1) -> int:
    """Values of one row an ``mma.sync``/``wgmma`` accumulator gives a thread: 2 per 8 keys
    of the keys its warp spans."""
    return max(1, block_k // warps_across_keys // 4)


def forward_step(block_k: int, wgmma: bool = False) -> tuple:
    """FlashAttention-2's forward step (flash_fwd_kernel.h), and every kernel that runs it
    (``flash_tile``, split-KV): a barrier once K_j has landed, the first K fragment from
    shared memory, S's last MMA, the row max over the thread's values and across its quad
    (two shuffle rounds; the row sum waits for the end), x·scale - m and its exp2, the
    conversion of P, a barrier once V_j has landed, the first V fragment, P V's last MMA.
    ``wgmma`` (FlashAttention-3's consumer warpgroups) reads its operands from shared memory
    itself and meets one named barrier a step (its ping-pong hand-off)."""
    return events(mma=2, smem=0 if wgmma else 2, sfu=1, fp=row_values_per_thread(block_k) + 2,
                  shfl=2, bar=1 if wgmma else 2)


def backward_step(wgmma: bool = False) -> tuple:
    """FlashAttention-2's backward step (flash_bwd_kernel.h), one Q block against a K/V
    block: the first Q fragment, S's last MMA, P = exp2(S·scale - L) (an FMA, an exp2),
    dS = P (dP - D) (a subtract, a multiply; dP's GEMM runs beside S's), the conversion,
    P and dS read back from shared memory for dV, dK and dQ, whose last MMA ends the step
    (dQ's atomics drain on their own); three barriers (Q_i landed, dS stored, dO's buffer
    free); no row reduction (L and D come precomputed).
    ``wgmma`` (FlashAttention-3's consumer warpgroups, ``compute_dqkv_ws``): operands come
    from shared memory or registers without loads; the step waits for the previous dS K_j
    (dQ_i), for S, then for dSᵀ Q_i (the step's last wait), at one named barrier (dS
    complete in shared memory, the dQ buffer free)."""
    if wgmma:
        return events(mma=3, sfu=1, fp=4, bar=1)
    return events(mma=2, smem=3, sfu=1, fp=4, bar=3)


def split_k_forward_step(block_k: int) -> tuple:
    """FlashAttention v1's forward step (the release's fmha_fprop_kernel_1xN.h; Algorithm 1
    as its warps run it), 16 query rows against a K/V block split over 4 warps: the Q
    fragment, S's last MMA, the row max over the thread's values, the four warps' maxima
    through shared memory and their max (3), the exp, the conversion of P, P V's last MMA,
    the partial outputs (and row sums) through shared memory and summed (3), the exp of the
    previous statistics' rescale and the rescale and normalization (2); its ``Softmax``
    reduces the row max across the quad before and after the warps' exchange (4 shuffle
    rounds) and the sums after (2), at two barriers (the maxima, the partials)."""
    return events(mma=2, smem=5, sfu=2,
                  fp=row_values_per_thread(block_k, SPLIT_K_WARPS) + 3 + 1 + 1 + 3 + 2,
                  shfl=6, bar=2)


def split_k_backward_step() -> tuple:
    """FlashAttention v1's backward step (Algorithm 4 as the release's warps run it, its
    dgrad kernels): the Q fragment, S's last MMA, P = exp(S - L), dS = P (dP - D), its
    conversion, P and dS read back from shared memory for dV and dK, dQ_i = dS K_j's last
    MMA, and its partials from the 8 warps through shared memory, summed (3 levels of a
    tree); two barriers (dS stored, the partials stored), no row reduction."""
    return events(mma=3, smem=5, sfu=1, fp=1 + 2 + 1 + 3, bar=2)


def split_k_forward_loads(block_k: int, next_q_share: float,
                          readback_share: float = 0.0) -> tuple:
    """The v1 release's forward (fmha_fprop_kernel_1xN.h) issues the load of the next step's
    Q_i once S's MMAs are issued and stores it to shared memory before the P V GEMM: the
    softmax lies between, with the waits of ``split_k_forward_step`` up to the conversion of
    P (S's last MMA, the row max over the thread's values, four shuffle rounds around the
    warps' maxima through shared memory at a barrier and their max, the exp, the
    conversion). At every K/V block but the first (``readback_share`` of the steps) it reads
    back the fp32 O_i the block before left (``gmem_o_tmp.load``), issued with the next Q_i
    and used once P V's partials are summed: the softmax, P V (half the step's GEMM work),
    its last MMA and the partials through shared memory at the second barrier lie between.
    The next step's log-sum-exp, loaded mid-softmax and used in the next step, has a whole
    step between: covered. ``next_q_share``: the steps that load a next Q_i
    (``next_step_share``)."""
    softmax = dict(sfu=1, fp=row_values_per_thread(block_k, SPLIT_K_WARPS) + 3 + 1, shfl=4)
    loads = (StepLoad("stream", softmax_share=1.0, events=events(mma=1, smem=1, bar=1,
                                                                  **softmax),
                      steps=next_q_share),)
    if readback_share:
        loads += (StepLoad("stream", gemm_share=1 / 2, softmax_share=1.0,
                           events=events(mma=2, smem=2, bar=2, **softmax),
                           steps=readback_share),)
    return loads


def split_k_backward_loads(next_share: float, readback_share: float) -> tuple:
    """The v1 release's backward (fmha_dgrad_kernel_1xN_loop.h), whose step runs five GEMMs of
    equal size (S, dP, dQ, dV, dK), with the waits of ``split_k_backward_step`` between them:
    the next Q_i is loaded once P is packed and stored after dV (dP, dQ, dV between; dS and
    its conversion, dQ's last MMA, the barrier, P read back), the next dO_i after dP and
    stored after dV (dQ, dV; the conversion, dQ's last MMA, the barrier, P read back); the
    next step's log-sum-exp after dV, used once the next S is in (dK, S; dS read back, the
    barrier, the Q fragment, S's last MMA), its D_i after the barrier, used after the next S
    (S; the Q fragment, S's last MMA, the exp), both a few bytes a row that stay in L2; the
    loop kernel (a CTA per head) reads its fp32 dQ_i back after dV and adds the step's part
    after dK and the barrier (dK; dS read back, the barrier), at every K/V block but the
    first (``readback_share`` of the steps), where the split kernel adds with atomics and
    reads nothing."""
    loads = (StepLoad("stream", gemm_share=3 / 5, events=events(mma=1, smem=1, fp=3, bar=1),
                      steps=next_share),
             StepLoad("stream", gemm_share=2 / 5, events=events(mma=1, smem=1, fp=1, bar=1),
                      steps=next_share),
             StepLoad("l2", gemm_share=2 / 5, events=events(mma=1, smem=2, bar=1),
                      steps=next_share),
             StepLoad("l2", gemm_share=1 / 5, events=events(mma=1, smem=1, sfu=1),
                      steps=next_share))
    if readback_share:
        loads += (StepLoad("stream", gemm_share=1 / 5, events=events(smem=1, bar=1),
                           steps=readback_share),)
    return loads


def next_step_share(steps_per_pass: np.ndarray, ctas_per_pass: int = 1) -> float:
    """The share of a release kernel's steps that load the next step's tiles: all but each
    CTA's last of a pass over a K/V block (``steps_per_pass``: the steps of each pass of a
    head; ``ctas_per_pass``: the CTAs a pass is dealt to)."""
    steps = float(np.sum(steps_per_pass))
    last = float(np.sum(np.minimum(steps_per_pass, ctas_per_pass)))
    return (steps - last) / steps if steps else 0.0


def later_blocks_share(steps_per_pass: np.ndarray) -> float:
    """The share of a release kernel's steps in its passes over every K/V block but the
    first: those that read back the fp32 accumulator the block before left."""
    steps = float(np.sum(steps_per_pass))
    return float(np.sum(steps_per_pass[1:])) / steps if steps else 0.0


def chain(step_events: tuple, steps_per_head: np.ndarray | float | int, heads: int,
          chains_per_step: int = 1) -> dict:
    """``Recorder.kernel``'s arguments for a kernel whose CTAs take ``steps_per_head`` tile
    steps a head (the sum of ``cta_work``, say), over ``heads`` heads; a CTA that runs several
    independent chains per step (FlashAttention-3's warpgroups) pays on each."""
    steps = float(np.sum(steps_per_head)) * heads * chains_per_step
    return {"step_events": step_events, "chain_steps": int(round(steps))}
