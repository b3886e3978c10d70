// diff_fwd.cu — Differential attention forward (Ye et al. 2024, "Differential Transformer",
// arXiv 2410.05258, Section 2.1, Equations 1–3), the port of algorithms/diff.py: one fused
// FlashAttention-2-style kernel with two online softmaxes.
//
// What it does: per head, with head_dim = the paper's 2d, Q₁ = q[..., :d], Q₂ = q[..., d:]
// (K likewise) and the full 2d-wide V shared by both maps,
//     O = RMSNorm_2d((softmax(scale Q₁K₁ᵀ) − λ_h softmax(scale Q₂K₂ᵀ)) V) · (1 − λ_init),
// RMSNorm without a gain: x / sqrt(mean(x²) + eps) over the 2d outputs of a row. λ_h comes per
// head from the host (diff.lambdas, fp32: the simulator's values); 1 − λ_init and eps are
// arguments (diff.lambda_init, diff.RMS_EPS). One CTA per (Q row block, batch·head): Q_i is
// loaded into shared memory once with both halves side by side (the 2d-wide row), K_j (both
// halves) and V_j stream through shared memory, and each warp keeps, for its 16 query rows,
// two 2d-wide fp32 accumulators, two running maxima and two running sums in registers. The
// score map of half h is an MMA over the k-steps of columns [h d, (h + 1) d) of the same
// swizzled Q and K tiles, so no half needs a tile of its own. Causal masking is bottom-right
// aligned (key j visible to query i iff j <= i + N_k − N_q), K/V blocks entirely above the
// diagonal are never loaded, and rows that see no key get O = 0 (the simulator's combine
// gives 0 for l = 0). Ragged N: zero-filled loads, masked scores, skipped stores.
// diff is simulated for multi-head attention only (kv_heads == heads), so there is no GQA here.
//
// Tile sizes (compile-time defines, from the simulator's plan by algorithms/ports/):
//   BLOCK_Q  = plan.block_q (B_r): query rows per CTA; one warp per 16 rows.
//   BLOCK_K  = plan.block_k (B_c): keys per K/V tile (a multiple of SUB_K).
//   HEAD_DIM = 2d, a multiple of 32 (each half a multiple of the MMA k-step of 16) and at most
//              128 (two 2d-wide fp32 accumulators take HEAD_DIM registers per thread).
//   SUB_K    = keys of one score map held in registers at a time (a port-side choice, not a
//              plan tile: ports.diff_sub_k). The two maps are processed one after the other on
//              each SUB_K-key slice of K_j/V_j — S = Q_h K_hᵀ, online softmax, acc_h += P V —
//              so only SUB_K / 2 score registers are live next to the accumulators. A slice is
//              a finer online-softmax step over the same K_j/V_j tile: traffic and tiles are
//              the plan's, only the rescale of acc happens once per slice instead of per tile.
// Shared memory (dynamic): Q_i, K_j, V_j tiles, (BLOCK_Q + 2 BLOCK_K) x HEAD_DIM x 2 bytes =
// flash2.smem_buffers(B_r, B_c, 2d), the plan's smem_bytes exactly. One buffer each for K_j
// and V_j (as the plan): K_{j+1}'s copy overlaps the last slice's second-map softmax and
// P V, V_{j+1}'s copy overlaps the next tile's first S = Q₁K₁ᵀ and its softmax.
// HBM traffic equals the simulator's count: Q once (both halves: N_q 2d e), K (both halves)
// and V once per Q block (only the visible blocks when causal), O once (N_q 2d e). Beyond the
// count: λ_h, 4 bytes per CTA (the simulator treats λ as a scalar).
// Tensor cores: mma.sync.m16n8k16 (fp16 or bf16 in, fp32 accumulate) with ldmatrix fragment
// loads — the plan's tc_path "mma_sync". P is rounded to the storage type for the P V MMA.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t).
#include "attn_common.cuh"

#ifndef BLOCK_Q
#define BLOCK_Q 128
#endif
#ifndef BLOCK_K
#define BLOCK_K 128
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef SUB_K
#define SUB_K 32
#endif

#define DIFF_HALF (HEAD_DIM / 2)                 // the paper's d
#define DIFF_NSUB (BLOCK_K / SUB_K)
#define NWARPS (BLOCK_Q / 16)
#define NTHREADS (NWARPS * 32)

static_assert(BLOCK_Q % 16 == 0 && BLOCK_Q <= 256, "BLOCK_Q must be a multiple of 16, <= 256");
static_assert(SUB_K % 16 == 0 && BLOCK_K % SUB_K == 0,
              "SUB_K must be a multiple of 16 that divides BLOCK_K");
static_assert(HEAD_DIM % 32 == 0 && HEAD_DIM <= 128,
              "HEAD_DIM (2d) must be a multiple of 32 (d a multiple of the k-step 16), <= 128");

// S = Q_h K_hᵀ for the warp's 16 rows and kKeys keys of the 2d-wide swizzled tiles: k-steps
// kk0 .. kk0 + d/16 − 1 (half h starts at kk0 = h d / 16). Layout as attn_warp_qk.
template <int kKeys>
__device__ __forceinline__ void diff_warp_qk_half(float (*s)[4], const attn_t* q_s,
                                                  const attn_t* k_s, int wrow, int kk0, int lane) {
    constexpr int CPR = HEAD_DIM / 8;
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = kk0; kk < kk0 + DIFF_HALF / 16; ++kk) {
        unsigned a[4];
        const int arow = wrow + (lane & 7) + ((lane >> 3) & 1) * 8;
        attn_ldmatrix_x4(a, q_s + attn_swizzle(arow, kk * 2 + (lane >> 4), CPR));
#pragma unroll
        for (int n = 0; n < kKeys / 16; ++n) {
            unsigned b[4];
            const int krow = n * 16 + (lane & 7) + (lane >> 4) * 8;
            attn_ldmatrix_x4(b, k_s + attn_swizzle(krow, kk * 2 + ((lane >> 3) & 1), CPR));
            attn_mma16816(s[2 * n], a, b[0], b[1]);
            attn_mma16816(s[2 * n + 1], a, b[2], b[3]);
        }
    }
}

// Arguments:
//   q, k, v (B, H, n_q or n_k, 2d): fp16/bf16, contiguous. lambda (H) fp32: λ per head.
//   o (B, H, n_q, 2d): output. heads = H, scale: softmax scale, out_scale = 1 − λ_init,
//   rms_eps: RMSNorm epsilon, causal: 0 or 1.
// Grid: (ceil(n_q / BLOCK_Q), B * H); block: NTHREADS = 32 BLOCK_Q / 16; dynamic shared
// memory: (BLOCK_Q + 2 BLOCK_K) * HEAD_DIM * 2 bytes.
extern "C" __global__ void __launch_bounds__(NTHREADS, 1)
diff_fwd(const attn_t* __restrict__ q, const attn_t* __restrict__ k, const attn_t* __restrict__ v,
         const float* __restrict__ lambda, attn_t* __restrict__ o, int n_q, int n_k, int heads,
         float scale, float out_scale, float rms_eps, int causal) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // Q_i: BLOCK_Q x 2d
    attn_t* k_s = q_s + BLOCK_Q * HEAD_DIM;                      // K_j: BLOCK_K x 2d
    attn_t* v_s = k_s + BLOCK_K * HEAD_DIM;                      // V_j: BLOCK_K x 2d

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int r0 = blockIdx.x * BLOCK_Q;
    const int bh = blockIdx.y;
    const long long head_off = (long long)bh * HEAD_DIM;
    const attn_t* q_h = q + head_off * n_q;
    const attn_t* k_h = k + head_off * n_k;
    const attn_t* v_h = v + head_off * n_k;

    const int r1 = min(r0 + BLOCK_Q, n_q);
    const int shift = n_k - n_q;
    const int key_end = causal ? max(0, min(n_k, r1 + shift)) : n_k;
    const int n_blocks = (key_end + BLOCK_K - 1) / BLOCK_K;

    // -- prologue: Q_i, K_0, V_0 -> SRAM (three commit groups) --
    attn_load_tile_async<BLOCK_Q, HEAD_DIM, NTHREADS>(q_s, q_h, r0, n_q, HEAD_DIM, tid);
    attn_cp_async_commit();
    attn_load_kv_async<BLOCK_K, HEAD_DIM, NTHREADS>(k_s, v_s, k_h, v_h, 0, n_k, HEAD_DIM, n_blocks, tid);

    float acc[2][HEAD_DIM / 8][4];                               // un-normalized O of each map
    float m[2][2], l[2][2];                                      // [map][row]: max (base 2), sum
#pragma unroll
    for (int mp = 0; mp < 2; ++mp) attn_softmax_init<HEAD_DIM>(acc[mp], m[mp], l[mp]);
    const float scale_log2 = scale * ATTN_LOG2E;
    const int wrow = warp * 16;

    for (int j = 0; j < n_blocks; ++j) {
        const int c0 = j * BLOCK_K;
        attn_cp_async_wait<1>();                                 // Q_i and K_j have landed
        __syncthreads();
#pragma unroll 1
        for (int sub = 0; sub < DIFF_NSUB; ++sub) {
            const int key0 = c0 + sub * SUB_K;
            const bool masked = key0 + SUB_K > n_k
                || (causal && min(key0 + SUB_K, n_k) - 1 > r0 + shift);
#pragma unroll
            for (int mp = 0; mp < 2; ++mp) {
                float s[SUB_K / 8][4];
                diff_warp_qk_half<SUB_K>(s, q_s, k_s + sub * SUB_K * HEAD_DIM, wrow,
                                         mp * (DIFF_HALF / 16), lane);   // S = Q_h K_hᵀ
                if (sub == DIFF_NSUB - 1 && mp == 1) {
                    __syncthreads();                             // every warp is done with K_j
                    if (j + 1 < n_blocks)
                        attn_load_tile_async<BLOCK_K, HEAD_DIM, NTHREADS>(k_s, k_h, c0 + BLOCK_K,
                                                                         n_k, HEAD_DIM, tid);
                    attn_cp_async_commit();                      // (possibly empty) group K_{j+1}
                }
                if (masked)
                    attn_warp_mask<SUB_K>(s, r0 + wrow, key0, n_k, shift, causal != 0, lane);
                attn_warp_softmax<SUB_K, HEAD_DIM>(s, acc[mp], m[mp], l[mp], scale_log2);
                if (sub == 0 && mp == 0) {
                    // the only group in flight is V_j: K_{j+1} is issued after the last S
                    attn_cp_async_wait<0>();                     // V_j has landed
                    __syncthreads();
                }
                attn_warp_pv<SUB_K, HEAD_DIM>(acc[mp], s, v_s + sub * SUB_K * HEAD_DIM, lane);
            }
        }
        __syncthreads();                                         // every warp is done with V_j
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, HEAD_DIM, NTHREADS>(v_s, v_h, c0 + BLOCK_K, n_k,
                                                             HEAD_DIM, tid);
        attn_cp_async_commit();                                  // group V_{j+1}
    }
    attn_cp_async_wait<0>();
    __syncthreads();                                             // Q_i landed even with no K/V block

    // -- epilogue: O = acc₁/l₁ − λ acc₂/l₂, RMSNorm over the 2d columns, × (1 − λ_init) --
    attn_quad_sum(l[0]);
    attn_quad_sum(l[1]);
    const float lam = lambda[bh % heads];
    float ms[2] = {0.f, 0.f};
    float a[2], b[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        a[r] = l[0][r] > 0.f ? 1.f / l[0][r] : 0.f;
        b[r] = l[1][r] > 0.f ? lam / l[1][r] : 0.f;
    }
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = e >> 1;
            const float x = acc[0][n][e] * a[r] - acc[1][n][e] * b[r];
            acc[0][n][e] = x;
            ms[r] += x * x;
        }
    }
    attn_quad_sum(ms);                                           // the quad holds a whole row
    float norm[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) norm[r] = out_scale / sqrtf(ms[r] / HEAD_DIM + rms_eps);
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; ++n) {
        acc[0][n][0] *= norm[0]; acc[0][n][1] *= norm[0];
        acc[0][n][2] *= norm[1]; acc[0][n][3] *= norm[1];
    }
    // the warp reuses its own Q rows as the staging tile of its O rows
    const float one[2] = {1.f, 1.f};
    attn_warp_o_to_smem<HEAD_DIM>(q_s, acc[0], one, wrow, lane);
    __syncwarp();
    attn_store_tile<16, HEAD_DIM>(o + head_off * n_q, q_s + wrow * HEAD_DIM, r0 + wrow, n_q,
                                  HEAD_DIM, lane, 32);
}
