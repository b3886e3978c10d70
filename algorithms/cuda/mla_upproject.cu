// mla_upproject.cu — multi-head latent attention decode, up-projected path (DeepSeek-AI 2024,
// "DeepSeek-V2", arXiv 2405.04434, §2.1), the port of algorithms/mla.py
// (``--path upproject``) with the split-KV kernels of algorithms/kernels/splitkv.py.
//
// What it does: the cache holds per token one latent c_KV (DC columns) and one RoPE key k^R
// (DR columns) shared by all H heads. This path rebuilds every head's keys and values from the
// latent at each decode step and then runs ordinary multi-head attention over them:
//   mla_upproject   per sequence one GEMM [K^C | V] (N_k x 2 H d_h) = c_KV (N_k x DC) ·
//                   [W_UK | W_UV]ᵀ, written to HBM as kv (B, N_k, 2, H, d_h): row n holds
//                   K^C_0 .. K^C_{H-1}, then V_0 .. V_{H-1} (the simulator's column order)
//   mla_up_attn     o_h = softmax(scale [q^C_h ; q^R_h] [K^C_h ; k^R]ᵀ) V_h, split over keys,
//                   one head x BLOCK_Q tokens per CTA (FlashAttention-2's loop, online
//                   softmax in fp32 registers); d_k = HEAD_DIM + DR, d_v = HEAD_DIM
//   mla_up_combine  merges the splits' fp32 partials (launched only with several splits), a
//                   CTA per head and COMBINE_ROWS tokens
// Causal (several new tokens, bottom-right aligned): token i sees key j iff j <= i + N_k − N_q.
//
// K = [K^C_h ; k^R] is assembled in shared memory, not in HBM: a key tile's first HEAD_DIM
// columns come from head h's K^C in kv, its last DR columns from the cache's k^R. The
// simulator's GEMM writes N_k x 2 H d_h (no k^R copy) and its attention reads d_h + d_h^R per
// key and head: exactly what these loads move, so counted and real traffic correspond with no
// extra copy kernel (algorithms/mla.py's executed mode concatenates k^R per head on the host;
// that copy is a NumPy layout, never counted, and not needed here).
//
// Tile sizes (compile-time defines from the plan via algorithms/ports/):
//   BLOCK_Q = plan.block_q (B_r, tokens of one head per CTA; the plan packs one head, g = 1),
//   BLOCK_K = plan.block_k (B_c, keys per K/V tile), HEAD_DIM = d_h, DR = plan.rope_dim,
//   DC = plan.kv_lora_rank (the GEMM's k), TILE_M, TILE_N, TILE_K = plan.gemm_tile_m/n/k
//   (the up-projection GEMM, attn_gemm.cuh's CTA: TILE_M latent rows x TILE_N output columns).
// Shared memory of an attention CTA: Q (ROWS_PAD x DKPAD) + K_j (BLOCK_K x DKPAD) + V_j
// (BLOCK_K x DVPAD), 2 bytes each, ROWS_PAD = BLOCK_Q rounded up to 16 (the MMA's M), DKPAD /
// DVPAD = d_k / d_v rounded up to 16: the plan's Q_i, K_j, V_j when those are multiples of 16.
// HBM traffic as the simulator counts: the GEMM reads each CTA's A panel (TILE_M x DC) and B
// panel (TILE_N x DC) once and writes its C tile once; the attention reads Q once per split,
// K_j and V_j once per (head, query block, split), writes O (or fp32 partials 4 (d_h + 1)
// bytes per row and split, read back by the combine).
// Tensor cores: mma.sync m16n8k16 (fp16 or bf16 in, fp32 accumulate) in all matmuls.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_gemm.cuh"      // gemm_cta, smem_raw, TILE_M/N/K (includes attn_common.cuh)

#ifndef BLOCK_Q
#define BLOCK_Q 1
#endif
#ifndef BLOCK_K
#define BLOCK_K 64
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef DR
#define DR 64
#endif
#ifndef DC
#define DC 512
#endif

#define DK (HEAD_DIM + DR)
#define DKPAD ATTN_PAD16(DK)
#define DVPAD ATTN_PAD16(HEAD_DIM)
#define ROWS_PAD (((BLOCK_Q + 15) / 16) * 16)
#define NWARPS (ROWS_PAD / 16)
#define NTHREADS (NWARPS * 32)
#define COMBINE_THREADS (((HEAD_DIM + 31) / 32) * 32)
#ifndef COMBINE_ROWS
#define COMBINE_ROWS 4
#endif

static_assert(ROWS_PAD <= 512, "BLOCK_Q must be <= 512 (32 warps)");
static_assert(BLOCK_K % 16 == 0, "BLOCK_K must be a multiple of 16");
static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");
static_assert(DR % 8 == 0 && DC % 8 == 0, "DR and DC must be multiples of 8 (16-byte rows)");

// ---- the up-projection GEMM ----------------------------------------------------------------

// kv[b] (n_k x 2·heads·HEAD_DIM) = c_kv[b] (n_k x DC) · w_ukvᵀ, w_ukv = [W_UK ; W_UV] as
// (2·heads·HEAD_DIM x DC) row-major (head h's K^C from rows h·HEAD_DIM.., its V from rows
// (heads + h)·HEAD_DIM..). Grid (ceil(2·heads·HEAD_DIM / TILE_N), ceil(n_k / TILE_M), B).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
mla_upproject(const attn_t* __restrict__ c_kv, const attn_t* __restrict__ w_ukv,
              attn_t* __restrict__ kv, int n_k, int heads) {
    const int n_out = 2 * heads * HEAD_DIM;
    const long long b = blockIdx.z;
    gemm_cta<true>(c_kv + b * n_k * DC, attn_dense_rows(n_k, DC), w_ukv, DC,
                   kv + b * n_k * n_out, attn_dense_rows(n_k, n_out), n_k, n_out, DC, 1.f);
}

// ---- attention over the up-projected keys and values ---------------------------------------

// Issue the copies of keys [c0, c0 + BLOCK_K) into a swizzled BLOCK_K x kCpr·8 tile: chunk ch
// of key row n from `main` (row n at main + n·main_ld, kMain columns) while ch·8 < kMain, then
// from `extra` (row n at extra + n·kExtra, kExtra columns), zeros past both and for keys
// >= k_hi. K: main = head h's K^C in kv, extra = k^R; V: main = V_h, no extra.
template <int kCpr, int kMain, int kExtra>
__device__ __forceinline__ void load_key_rows(attn_t* tile, const attn_t* main, long long main_ld,
                                              const attn_t* extra, int c0, int k_hi, int tid) {
    for (int idx = tid; idx < BLOCK_K * kCpr; idx += NTHREADS) {
        const int r = idx / kCpr, ch = idx % kCpr, key = c0 + r, col = ch * 8;
        const bool ok = key < k_hi && col < kMain + kExtra;
        const attn_t* src = !ok ? main
                          : col < kMain ? main + key * main_ld + col
                                        : extra + (long long)key * kExtra + (col - kMain);
        attn_cp_async16(tile + attn_swizzle(r, ch, kCpr), src, ok ? 16 : 0);
    }
    attn_cp_async_commit();
}

// s = Q_w K_jᵀ for the warp's 16 rows over all DKPAD columns (attn_warp_qk's fragment layout).
// Arguments:
//   q (B, H, n_q, HEAD_DIM) = q^C, q_rope (B, H, n_q, DR); kv (B, n_k, 2, H, HEAD_DIM) from
//   mla_upproject, k_rope (B, n_k, DR); o_part (B·H, n_splits, n_q, HEAD_DIM), lse_part (B·H,
//   n_splits, n_q): fp32 partials (several splits); o (B, H, n_q, HEAD_DIM) and lse (B, H,
//   n_q) fp32 (one split). Grid (n_splits, B · H · ceil(n_q / BLOCK_Q)); block NTHREADS.
// At least 1 CTA per SM: without it ptxas (sm_90, 4 warps at d_h = 40) caps the kernel at 96
// registers and spills 4 B; the plan's shared memory already bounds the CTAs per SM.
extern "C" __global__ void __launch_bounds__(NTHREADS, 1)
mla_up_attn(const attn_t* __restrict__ q, const attn_t* __restrict__ q_rope,
            const attn_t* __restrict__ kv, const attn_t* __restrict__ k_rope,
            float* __restrict__ o_part, float* __restrict__ lse_part, attn_t* __restrict__ o,
            float* __restrict__ lse, int n_q, int n_k, int heads, float scale, int causal) {
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // Q: ROWS_PAD x DKPAD
    attn_t* k_s = q_s + ROWS_PAD * DKPAD;                        // K_j: BLOCK_K x DKPAD
    attn_t* v_s = k_s + BLOCK_K * DKPAD;                         // V_j: BLOCK_K x DVPAD
    constexpr int CPR_K = DKPAD / 8, CPR_V = DVPAD / 8;

    const int tid = threadIdx.x, lane = tid & 31, wrow = (tid >> 5) * 16;
    const int split = blockIdx.x, n_splits = gridDim.x;
    const int t_r = (n_q + BLOCK_Q - 1) / BLOCK_Q;
    const int rb = blockIdx.y % t_r;
    const int h = (blockIdx.y / t_r) % heads;
    const int b = blockIdx.y / (t_r * heads);
    const long long bh = (long long)b * heads + h;
    const int r0 = rb * BLOCK_Q, r1 = min(r0 + BLOCK_Q, n_q);  // query tokens of the CTA
    // head h's K^C and V_h in the up-projected cache: rows 2·H·HEAD_DIM apart
    const long long kv_ld = 2LL * heads * HEAD_DIM;
    const attn_t* kc_h = kv + (long long)b * n_k * kv_ld + (long long)h * HEAD_DIM;
    const attn_t* v_h = kc_h + (long long)heads * HEAD_DIM;
    const attn_t* kr_b = k_rope + (long long)b * n_k * DR;

    const attn_split_keys keys = attn_split_range<BLOCK_K>(split, n_splits, n_q, n_k, r1, causal);
    const int k_lo = keys.k_lo, k_hi = keys.k_hi, n_blocks = keys.n_blocks;

    // -- Q rows [q^C ; q^R] -> SRAM (padding rows and columns zero) --
    for (int idx = tid; idx < ROWS_PAD * CPR_K; idx += NTHREADS) {
        const int r = idx / CPR_K, ch = idx % CPR_K, i = r0 + r, col = ch * 8;
        const bool ok = i < r1 && col < DK;
        const long long row = bh * n_q + i;
        const attn_t* src = !ok ? q
                          : col < HEAD_DIM ? q + row * HEAD_DIM + col
                                           : q_rope + row * DR + (col - HEAD_DIM);
        attn_cp_async16(q_s + attn_swizzle(r, ch, CPR_K), src, ok ? 16 : 0);
    }
    attn_cp_async_commit();
    // three groups in flight from here on, in order: (Q), K_j, V_j; an empty group keeps the
    // count uniform when a CTA has no key block
    if (n_blocks > 0) load_key_rows<CPR_K, HEAD_DIM, DR>(k_s, kc_h, kv_ld, kr_b, k_lo, k_hi, tid);
    else attn_cp_async_commit();
    if (n_blocks > 0) load_key_rows<CPR_V, HEAD_DIM, 0>(v_s, v_h, kv_ld, v_h, k_lo, k_hi, tid);
    else attn_cp_async_commit();

    float acc[DVPAD / 8][4], m[2], l[2];
    attn_softmax_init<DVPAD>(acc, m, l);
    const float scale_log2 = scale * ATTN_LOG2E;
    const int shift = n_k - n_q;

    for (int j = 0; j < n_blocks; ++j) {
        const int c0 = k_lo + j * BLOCK_K;
        attn_cp_async_wait<1>();                               // Q and K_j have landed
        __syncthreads();
        // -- S = Q K_jᵀ over all d_k = d_h + d_h^R columns --
        float s[BLOCK_K / 8][4];
        // k loop rolled: DKPAD = 192 is 12 k-steps, and unrolled (attn_warp_qk) ptxas spills
        // (sm_90, B_c = 128, d_h = 128: 255 registers + 4 B)
        attn_warp_qk_rolled<BLOCK_K, DKPAD>(s, q_s, k_s, wrow, lane);
        __syncthreads();                                       // every warp is done with K_j
        if (j + 1 < n_blocks)
            load_key_rows<CPR_K, HEAD_DIM, DR>(k_s, kc_h, kv_ld, kr_b, c0 + BLOCK_K, k_hi, tid);
        else
            attn_cp_async_commit();
        // -- mask keys past the split and (causal) past the row's token --
        if (causal || c0 + BLOCK_K > k_hi)
            attn_warp_mask<BLOCK_K>(s, r0 + wrow, c0, k_hi, shift, causal != 0, lane);
        // -- update m_i and l_i; P = exp(S − m) stays in registers --
        attn_warp_softmax<BLOCK_K, DVPAD>(s, acc, m, l, scale_log2);
        attn_cp_async_wait<1>();                               // V_j has landed
        __syncthreads();
        attn_warp_pv<BLOCK_K, DVPAD>(acc, s, v_s, lane);       // O += P V_j
        __syncthreads();                                       // every warp is done with V_j
        if (j + 1 < n_blocks)
            load_key_rows<CPR_V, HEAD_DIM, 0>(v_s, v_h, kv_ld, v_h, c0 + BLOCK_K, k_hi, tid);
        else
            attn_cp_async_commit();
    }
    attn_cp_async_wait<0>();

    // -- epilogue: O = acc / l, lse = m + log l; final (one split) or fp32 partial --
    attn_quad_sum(l);
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int i = r0 + wrow + (lane >> 2) + hr * 8;
        if (i >= r1) continue;
        const float inv = l[hr] > 0.f ? 1.f / l[hr] : 0.f;
        const float row_lse = l[hr] > 0.f ? (m[hr] + log2f(l[hr])) * ATTN_LN2 : ATTN_NEG_INF;
        const long long prow = (bh * n_splits + split) * n_q + i;
#pragma unroll
        for (int n = 0; n < DVPAD / 8; ++n) {
            const int col = n * 8 + 2 * (lane & 3);
            if (col >= HEAD_DIM) continue;
            const float x0 = acc[n][2 * hr] * inv, x1 = acc[n][2 * hr + 1] * inv;
            if (n_splits == 1)
                *reinterpret_cast<unsigned*>(o + (bh * n_q + i) * HEAD_DIM + col) = attn_pack2(x0, x1);
            else
                *reinterpret_cast<attn_f2*>(o_part + prow * HEAD_DIM + col) = attn_f2{x0, x1};
        }
        if ((lane & 3) == 0) {
            if (n_splits == 1) lse[bh * n_q + i] = row_lse;
            else lse_part[prow] = row_lse;
        }
    }
}

// Merge the n_splits partials of COMBINE_ROWS rows of one query head into o and lse.
// Grid (B·H, ceil(n_q / COMBINE_ROWS)).
extern "C" __global__ void __launch_bounds__(COMBINE_THREADS)
mla_up_combine(const float* __restrict__ o_part, const float* __restrict__ lse_part,
               attn_t* __restrict__ o, float* __restrict__ lse, int n_q, int n_splits) {
    attn_combine_rows<HEAD_DIM, COMBINE_ROWS>(o_part, lse_part, o, lse, n_q, n_splits);
}
