// flash2_fwd.cu — FlashAttention-2 forward (Dao 2023, arXiv 2307.08691, Algorithm 1), the
// port of algorithms/flash2.py.
//
// What it does: O = softmax(scale · Q Kᵀ [+ causal mask]) V for fp16 Q, K, V of shape
// (batch, heads, N, d) (K and V may have fewer heads: query head h reads kv head
// h / KV_GROUP), plus the fp32 log-sum-exp of every row. One CTA per (Q row block, batch·head):
// Q_i is loaded into shared memory once, K_j and V_j stream through shared memory, the
// scores S_ij, probabilities P_ij and the un-normalized accumulator O_i stay in registers
// (fp32) with an online softmax, and O_i / l_i and lse_i are written once at the end.
// Causal masking is bottom-right aligned: key j is visible to query i iff j <= i + N_k - N_q;
// K/V blocks entirely above the diagonal are never loaded; rows that see no key get O = 0
// and lse = -inf. Ragged N (not a multiple of the blocks) is handled by zero-filled loads,
// masked scores and skipped stores.
//
// Tile sizes (compile-time defines, taken from the simulator's plan by algorithms/ports/):
//   BLOCK_Q   = plan.block_q  (B_r): query rows per CTA, BLOCK_Q / (16 WARP_M_TILES) warps.
//   WARP_M_TILES = 16-row tiles per warp (1 or 2; algorithms/ports picks 2 when the registers allow,
//               d <= 64, and never with dropout): a warp's K and V fragments then serve 32
//               rows, halving the shared-memory reads per MMA — FA-2's 4 warps for a 128-row block.
//   BLOCK_K   = plan.block_k  (B_c): keys per K/V tile (a multiple of 16).
//   HEAD_DIM  = d (a multiple of 8); the MMA k-step pads it to 16 with zero columns.
// Shared memory (dynamic): Q_i, K_j, V_j tiles, (BLOCK_Q + 2 BLOCK_K) x HEAD_DIM x 2 bytes —
// the plan's smem_bytes exactly when HEAD_DIM is a multiple of 16. K_j and V_j have one
// buffer each (as in the plan): V_j's copy overlaps S = Q K_jᵀ and the softmax, K_{j+1}'s copy
// overlaps the softmax and O += P V_j.
// HBM traffic equals the simulator's count: Q once, K and V once per Q block (only the
// visible blocks when causal), O once (fp16) and lse once (fp32).
// Tensor cores: mma.sync.m16n8k16 (fp16 or bf16 in, fp32 accumulate) with ldmatrix fragment loads —
// the plan's tc_path "mma_sync".
// Dropout (--dropout p, training): compiled in with -DATTN_DROPOUT=1 (algorithms/ports adds it
// when the workload has dropout), as the simulator's flash2 (algorithms/flash_tile.py
// attend_tile): m and l are updated from the undropped P~, then P~ ∘ Z feeds O_i += P~ V_j,
// with Z regenerated on chip from the simulator's keep mask (attn_dropout.cuh, bit for bit;
// no HBM traffic; the 8-byte seed a CTA reads is not counted, as in flash1_fwd.cu). A define
// rather than a runtime flag: the kernel without dropout keeps its registers exactly (the
// hash's 64-bit temporaries next to the 255-register d = 64 tile would otherwise be budgeted
// for every launch; docs/gpu.md "The flash2 dropout" has the counts).
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_common.cuh"
#ifndef ATTN_DROPOUT
#define ATTN_DROPOUT 0
#endif
#if ATTN_DROPOUT
#include "attn_dropout.cuh"
#endif

#ifndef BLOCK_Q
#define BLOCK_Q 128
#endif
#ifndef BLOCK_K
#define BLOCK_K 64
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif

// Tuning knob (not from the plan): CTAs per SM the register allocation must allow. 1 lets
// ptxas use up to 255 registers; 2 caps them at 128 (small spills at d = 64, B_c = 128).
#ifndef MIN_CTAS_PER_SM
#define MIN_CTAS_PER_SM 1
#endif

#ifndef WARP_M_TILES
#define WARP_M_TILES 1
#endif

#define DPAD ATTN_PAD16(HEAD_DIM)
#define MT WARP_M_TILES
#define WARP_ROWS (16 * MT)
#define NWARPS (BLOCK_Q / WARP_ROWS)
#define NTHREADS (NWARPS * 32)

static_assert(BLOCK_Q % WARP_ROWS == 0 && BLOCK_Q <= 256,
              "BLOCK_Q must be a multiple of 16 WARP_M_TILES, <= 256");
static_assert(BLOCK_K % 16 == 0, "BLOCK_K must be a multiple of 16");
static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");

// Arguments:
//   q (B, H, n_q, d), k and v (B, H / kv_group, n_k, d): fp16, contiguous.
//   o (B, H, n_q, d) fp16, lse (B, H, n_q) fp32: outputs.
//   heads = H, kv_group = H / kv_heads, scale: softmax scale, causal: 0 or 1.
//   dropout: seed (2 int32, low half first), threshold = round(p 2²⁴), inv_keep = 1 / (1 - p)
//   (attn_dropout.cuh); read only by ATTN_DROPOUT builds (the port passes a null seed, 0 and
//   1 without dropout): one signature for both builds, as the emulator and flash1 expect.
// Grid: (ceil(n_q / BLOCK_Q), B * H); block: NTHREADS = 32 NWARPS; dynamic shared memory:
// (BLOCK_Q + 2 BLOCK_K) * DPAD * 2 bytes.
extern "C" __global__ void __launch_bounds__(NTHREADS, MIN_CTAS_PER_SM)
flash2_fwd(const attn_t* __restrict__ q, const attn_t* __restrict__ k, const attn_t* __restrict__ v,
           attn_t* __restrict__ o, float* __restrict__ lse, int n_q, int n_k, int heads,
           int kv_group, float scale, int causal,
           const int* __restrict__ seed, int threshold, float inv_keep) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // Q_i: BLOCK_Q x DPAD
    attn_t* k_s = q_s + BLOCK_Q * DPAD;                          // K_j: BLOCK_K x DPAD
    attn_t* v_s = k_s + BLOCK_K * DPAD;                          // V_j: BLOCK_K x DPAD

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int r0 = blockIdx.x * BLOCK_Q;                       // first query row of the CTA
    const int bh = blockIdx.y;                                 // batch * heads + head
    const int kv_bh = (bh / heads) * (heads / kv_group) + (bh % heads) / kv_group;
    const attn_t* q_h = q + (long long)bh * n_q * HEAD_DIM;
    const attn_t* k_h = k + (long long)kv_bh * n_k * HEAD_DIM;
    const attn_t* v_h = v + (long long)kv_bh * n_k * HEAD_DIM;
#if ATTN_DROPOUT
    const unsigned long long seed_mix = attn_dropout_seed_mix(seed);
    const long long head_row0 = (long long)bh * n_q;           // the mask indexes (bh, i, j)
#endif

    // Keys visible to the CTA's last row bound the K/V loop (causal: blocks above the
    // diagonal are skipped, as the simulator's loop does).
    const int r1 = min(r0 + BLOCK_Q, n_q);
    const int shift = n_k - n_q;
    const int key_end = causal ? max(0, min(n_k, r1 + shift)) : n_k;
    const int n_blocks = (key_end + BLOCK_K - 1) / BLOCK_K;

    // -- prologue: Q_i, K_0, V_0 -> SRAM (three commit groups) --
    attn_load_tile_async<BLOCK_Q, DPAD, NTHREADS>(q_s, q_h, r0, n_q, HEAD_DIM, tid);
    attn_cp_async_commit();
    if (n_blocks > 0) attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(k_s, k_h, 0, n_k, HEAD_DIM, tid);
    attn_cp_async_commit();
    if (n_blocks > 0) attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(v_s, v_h, 0, n_k, HEAD_DIM, tid);
    attn_cp_async_commit();

    float acc[MT][DPAD / 8][4];                                // un-normalized O_i rows
    float m[MT][2], l[MT][2];                                  // running max (base 2), sum
#pragma unroll
    for (int t = 0; t < MT; ++t) {
#pragma unroll
        for (int n = 0; n < DPAD / 8; ++n) acc[t][n][0] = acc[t][n][1] = acc[t][n][2] = acc[t][n][3] = 0.f;
        m[t][0] = m[t][1] = ATTN_NEG_INF;
        l[t][0] = l[t][1] = 0.f;
    }
    const float scale_log2 = scale * ATTN_LOG2E;
    const int wrow = warp * WARP_ROWS;                         // the warp's rows in the tile

    for (int j = 0; j < n_blocks; ++j) {
        const int c0 = j * BLOCK_K;
        attn_cp_async_wait<1>();                               // Q_i and K_j have landed
        __syncthreads();
#if ATTN_DROPOUT
        // Z of the warp's rows, drawn before S exists: the hashing then shares the registers
        // only with the O accumulator (no new spills; docs/gpu.md)
        AttnKeepBits<BLOCK_K> keep[MT];
#pragma unroll
        for (int t = 0; t < MT; ++t)
            keep[t].draw(seed_mix, head_row0, r0 + wrow + 16 * t, c0, n_k, threshold, lane);
#endif
        float s[MT][BLOCK_K / 8][4];
        attn_warp_qk_mt<MT, BLOCK_K, DPAD>(s, q_s, k_s, wrow, lane);  // S = Q_i K_jᵀ
        __syncthreads();                                       // every warp is done with K_j
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(k_s, k_h, c0 + BLOCK_K, n_k, HEAD_DIM, tid);
        attn_cp_async_commit();                                // (possibly empty) group K_{j+1}
        const bool ragged = c0 + BLOCK_K > n_k;
        const bool partial = causal && (min(c0 + BLOCK_K, n_k) - 1 > r0 + shift);
#pragma unroll
        for (int t = 0; t < MT; ++t) {
            if (ragged || partial)
                attn_warp_mask<BLOCK_K>(s[t], r0 + wrow + 16 * t, c0, n_k, shift, causal != 0, lane);
            // -- update m_i and l_i, P = exp(S - m), rescale the accumulator --
            attn_warp_softmax<BLOCK_K, DPAD>(s[t], acc[t], m[t], l[t], scale_log2);
#if ATTN_DROPOUT
            // l_i summed the undropped P~ above; P~ ∘ Z is what P V_j reads
            attn_warp_dropout<BLOCK_K>(s[t], keep[t], inv_keep);
#endif
        }
        attn_cp_async_wait<1>();                               // V_j has landed
        __syncthreads();
        attn_warp_pv_mt<MT, BLOCK_K, DPAD>(acc, s, v_s, lane); // O_i += P V_j
        __syncthreads();                                       // every warp is done with V_j
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(v_s, v_h, c0 + BLOCK_K, n_k, HEAD_DIM, tid);
        attn_cp_async_commit();                                // group V_{j+1}
    }
    attn_cp_async_wait<0>();
    __syncthreads();                                           // Q_i landed even with no K/V block

    // -- epilogue: O_i = acc / l, lse_i = m + log l; the warp reuses its own Q rows --
#pragma unroll
    for (int t = 0; t < MT; ++t) {
        attn_quad_sum(l[t]);
        attn_warp_o_to_smem<DPAD>(q_s, acc[t], l[t], wrow + 16 * t, lane);
    }
    __syncwarp();
    attn_store_tile<WARP_ROWS, DPAD>(o + (long long)bh * n_q * HEAD_DIM, q_s + wrow * DPAD,
                                     r0 + wrow, n_q, HEAD_DIM, lane, 32);
    if ((lane & 3) == 0) {
#pragma unroll
        for (int t = 0; t < MT; ++t) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = r0 + wrow + 16 * t + (lane >> 2) + r * 8;
                if (row < n_q)
                    lse[(long long)bh * n_q + row] =
                        l[t][r] > 0.f ? (m[t][r] + log2f(l[t][r])) * ATTN_LN2 : ATTN_NEG_INF;
            }
        }
    }
}
