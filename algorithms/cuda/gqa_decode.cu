// gqa_decode.cu — grouped-query attention with split-KV (flash-decoding), the port of
// algorithms/gqa.py (kernels of algorithms/kernels/splitkv.py). GQA: Ainslie et al. 2023 (arXiv
// 2305.13245); split-KV: Dao, Haziza, Massa, Sizov, "Flash-Decoding for long-context
// inference" (2023).
//
// What it does: H query heads attend to G = H / kv_group key/value heads (query head h reads
// kv head h / kv_group). A CTA takes one "pack" of GROUP consecutive query heads (GROUP = 1:
// FlashAttention-2 per head; GROUP = kv_group: the whole group, so each K/V tile is loaded
// once for all its heads), one block of BLOCK_Q query tokens of each of them (GROUP x BLOCK_Q
// packed rows, one warp per 16), and one chunk ("split") of the keys, and runs
// FlashAttention-2's loop over the chunk (K_j, V_j tiles through shared memory, online softmax
// in fp32 registers). Kernels:
//   gqa_splitkv   grid (n_splits, B · (H / GROUP) · ceil(N_q / BLOCK_Q)). With one split it
//                 writes O (fp16) and lse (fp32) directly; with several it writes each split's
//                 normalized partial O_s and lse_s in fp32.
//   gqa_combine   grid (B · H, ceil(N_q / COMBINE_ROWS)), one CTA per query head and block of
//                 COMBINE_ROWS rows (the simulator's ``splitkv.combine_rows``), merging them:
//                 O = Σ_s exp(lse_s − lse) O_s with lse = log Σ_s exp(lse_s) (launched only
//                 when n_splits > 1, as the simulator's ``splitkv_combine``).
// The splits are the simulator's: the ceil(N_k / BLOCK_K) key blocks dealt into n_splits
// chunks of whole blocks, chunk s = blocks [s·blocks/n, (s+1)·blocks/n). Causal (bottom-right
// aligned): token i sees key j iff j <= i + N_k − N_q.
//
// Tile sizes (compile-time defines from the plan via algorithms/ports/):
//   BLOCK_Q  = plan.block_q (B_r, query tokens per head in a CTA);
//   GROUP    = plan.group (query heads packed in a CTA);
//   BLOCK_K  = plan.block_k (B_c, keys per K/V tile);
//   HEAD_DIM = d (a multiple of 8).
// Shared memory of a split CTA: (ROWS_PAD + 2 BLOCK_K) x HEAD_DIM x 2 bytes with ROWS_PAD =
// GROUP·BLOCK_Q rounded up to 16 — the plan's Q_i, K_j, V_j when GROUP·BLOCK_Q is a multiple
// of 16. HBM traffic as the simulator counts: Q once per split, K/V once per (pack, row block),
// partials 4 (d + 1) bytes per (row, split) written and read back by the combine.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_common.cuh"

#ifndef BLOCK_Q
#define BLOCK_Q 1
#endif
#ifndef GROUP
#define GROUP 8
#endif
#ifndef BLOCK_K
#define BLOCK_K 128
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif

#define DPAD ATTN_PAD16(HEAD_DIM)
#define ROWS_PAD (((GROUP * BLOCK_Q + 15) / 16) * 16)
#define NWARPS (ROWS_PAD / 16)
#define NTHREADS (NWARPS * 32)
#define COMBINE_THREADS (((HEAD_DIM + 31) / 32) * 32)
#ifndef COMBINE_ROWS
#define COMBINE_ROWS 4
#endif

static_assert(ROWS_PAD <= 512, "GROUP * BLOCK_Q must be <= 512 (32 warps)");
static_assert(BLOCK_K % 16 == 0, "BLOCK_K must be a multiple of 16");
static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");

// Arguments:
//   q (B, H, n_q, d), k and v (B, H / kv_group, n_k, d): fp16.
//   o_part (B·H, n_splits, n_q, d), lse_part (B·H, n_splits, n_q): fp32 partials (unused
//   with one split); o (B, H, n_q, d) fp16 and lse (B, H, n_q) fp32 (written with one split).
extern "C" __global__ void __launch_bounds__(NTHREADS)
gqa_splitkv(const attn_t* __restrict__ q, const attn_t* __restrict__ k, const attn_t* __restrict__ v,
            float* __restrict__ o_part, float* __restrict__ lse_part, attn_t* __restrict__ o,
            float* __restrict__ lse, int n_q, int n_k, int heads, int kv_group, float scale,
            int causal) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // packed rows: ROWS_PAD x DPAD
    attn_t* k_s = q_s + ROWS_PAD * DPAD;                         // K_j: BLOCK_K x DPAD
    attn_t* v_s = k_s + BLOCK_K * DPAD;                          // V_j: BLOCK_K x DPAD

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wrow = warp * 16;
    const int split = blockIdx.x, n_splits = gridDim.x;
    const int packs = heads / GROUP, t_r = (n_q + BLOCK_Q - 1) / BLOCK_Q;
    const int rb = blockIdx.y % t_r;
    const int pack = (blockIdx.y / t_r) % packs;
    const int b = blockIdx.y / (t_r * packs);
    const int h0 = pack * GROUP;                               // first query head of the pack
    const int kv_bh = b * (heads / kv_group) + h0 / kv_group;
    const attn_t* k_h = k + (long long)kv_bh * n_k * HEAD_DIM;
    const attn_t* v_h = v + (long long)kv_bh * n_k * HEAD_DIM;
    const int r0 = rb * BLOCK_Q, r1 = min(r0 + BLOCK_Q, n_q);  // query tokens of the CTA

    const attn_split_keys keys = attn_split_range<BLOCK_K>(split, n_splits, n_q, n_k, r1, causal);
    const int k_lo = keys.k_lo, k_hi = keys.k_hi, n_blocks = keys.n_blocks;
    const int shift = n_k - n_q;

    // -- prologue: packed Q rows (row r is token r0 + r % BLOCK_Q of head h0 + r / BLOCK_Q),
    //    the split's first K and V tiles -> SRAM (three commit groups) --
    attn_load_packed_rows_async<ROWS_PAD, DPAD, NTHREADS, GROUP, BLOCK_Q>(q_s, q, b, heads, h0, n_q,
                                                                          r0, r1, HEAD_DIM, tid);
    attn_cp_async_commit();
    attn_load_kv_async<BLOCK_K, DPAD, NTHREADS>(k_s, v_s, k_h, v_h, k_lo, k_hi, HEAD_DIM, n_blocks, tid);

    float acc[DPAD / 8][4], m[2], l[2];
    attn_softmax_init<DPAD>(acc, m, l);
    const float scale_log2 = scale * ATTN_LOG2E;

    for (int j = 0; j < n_blocks; ++j) {
        const int c0 = k_lo + j * BLOCK_K;
        attn_cp_async_wait<1>();                               // Q rows and K_j have landed
        __syncthreads();
        float s[BLOCK_K / 8][4];
        attn_warp_qk<BLOCK_K, DPAD>(s, q_s, k_s, wrow, lane);  // S = Q Kᵀ for the packed rows
        __syncthreads();                                       // every warp is done with K_j
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(k_s, k_h, c0 + BLOCK_K, k_hi, HEAD_DIM, tid);
        attn_cp_async_commit();
        if (causal || c0 + BLOCK_K > k_hi) {
            // keys past the split, and (causal) past the row's token
#pragma unroll
            for (int n = 0; n < BLOCK_K / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = c0 + n * 8 + 2 * (lane & 3) + (e & 1);
                    const int r = wrow + (lane >> 2) + (e >> 1) * 8;
                    const int i = r0 + r % BLOCK_Q;
                    if (key >= k_hi || (causal && key > i + shift)) s[n][e] = ATTN_NEG_INF;
                }
            }
        }
        attn_warp_softmax<BLOCK_K, DPAD>(s, acc, m, l, scale_log2);
        attn_cp_async_wait<1>();                               // V_j has landed
        __syncthreads();
        attn_warp_pv<BLOCK_K, DPAD>(acc, s, v_s, lane);        // O += P V_j
        __syncthreads();                                       // every warp is done with V_j
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(v_s, v_h, c0 + BLOCK_K, k_hi, HEAD_DIM, tid);
        attn_cp_async_commit();
    }
    attn_cp_async_wait<0>();

    // -- epilogue: O = acc / l, lse = m + log l, final (one split) or partial (fp32) --
    attn_quad_sum(l);
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int r = wrow + (lane >> 2) + hr * 8;
        const int hh = r / BLOCK_Q, i = r0 + r % BLOCK_Q;
        if (hh >= GROUP || i >= r1) continue;
        const long long bh = (long long)b * heads + h0 + hh;
        const float inv = l[hr] > 0.f ? 1.f / l[hr] : 0.f;
        const float row_lse = l[hr] > 0.f ? (m[hr] + log2f(l[hr])) * ATTN_LN2 : ATTN_NEG_INF;
        if (n_splits == 1) {
            attn_t* dst = o + (bh * n_q + i) * HEAD_DIM;
#pragma unroll
            for (int n = 0; n < DPAD / 8; ++n) {
                const int col = n * 8 + 2 * (lane & 3);
                if (col < HEAD_DIM)
                    *reinterpret_cast<unsigned*>(dst + col) =
                        attn_pack2(acc[n][2 * hr] * inv, acc[n][2 * hr + 1] * inv);
            }
            if ((lane & 3) == 0) lse[bh * n_q + i] = row_lse;
        } else {
            const long long prow = (bh * n_splits + split) * n_q + i;
            float* dst = o_part + prow * HEAD_DIM;
#pragma unroll
            for (int n = 0; n < DPAD / 8; ++n) {
                const int col = n * 8 + 2 * (lane & 3);
                if (col < HEAD_DIM)
                    *reinterpret_cast<attn_f2*>(dst + col) =
                        attn_f2{acc[n][2 * hr] * inv, acc[n][2 * hr + 1] * inv};
            }
            if ((lane & 3) == 0) lse_part[prow] = row_lse;
        }
    }
}

// Merge the n_splits partials of COMBINE_ROWS rows of one query head.
// Grid (B·H, ceil(n_q / COMBINE_ROWS)).
extern "C" __global__ void __launch_bounds__(COMBINE_THREADS)
gqa_combine(const float* __restrict__ o_part, const float* __restrict__ lse_part,
            attn_t* __restrict__ o, float* __restrict__ lse, int n_q, int n_splits) {
    attn_combine_rows<HEAD_DIM, COMBINE_ROWS>(o_part, lse_part, o, lse, n_q, n_splits);
}
