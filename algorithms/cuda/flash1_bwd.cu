// flash1_bwd.cu — FlashAttention backward as published (Dao et al. 2022, arXiv 2205.14135,
// Appendix B.4, Algorithm 4), the port of algorithms/flash1/backward.py.
//
// What it does: given Q, K, V, dO (B, H, N, d) and the forward's O, ℓ, m (flash1_fwd.cu), the
// gradients dQ, dK, dV of O = softmax(scale · Q Kᵀ [+ causal mask]) V, with the loop order of
// Algorithm 4, in two kernels as the simulator launches them:
//   flash1_bwd_init (B·H): line 5, dQ = dK = dV = 0 in HBM;
//   flash1_bwd (B·H; one CTA per head, as the forward): the OUTER loop walks the K/V blocks
//     K_j, V_j (B_c keys, line 7, shared memory), holding dK_j, dV_j in fp32 registers; the
//     INNER loop walks the Q blocks i: Q_i, dO_i to shared memory, O_i, ℓ_i, m_i, dQ_i from HBM
//     (line 10), S_ij and P_ij = exp(scale S_ij − m_i) / ℓ_i recomputed on chip (lines 11-13),
//     dV_j += P_ijᵀ dO_i (16), dP_ij = dO_i V_jᵀ (17), D_i = rowsum(dO_i ∘ O_i) (19),
//     dS_ij = scale · P_ij ∘ (dP_ij − D_i) (20: τ applied once, as the simulator), dQ_i += dS_ij
//     K_j read-modify-written in HBM (21), dK_j += dS_ijᵀ Q_i (22); dK_j, dV_j written once
//     after the inner loop (24).
// Causal masking is bottom-right aligned (key j visible to query i iff j <= i + N_k − N_q): the
// inner loop starts at the first Q block that sees key c0, as the simulator's loop; rows that
// see no key (ℓ = 0, m = −inf) get P = 0. Ragged N: zero-filled loads, masked keys, skipped
// stores. Multi-head only (the simulator has no GQA backward; algorithms/ports refuses it).
//
// Tile sizes (compile-time defines from the simulator's backward plan, plan.bwd, by
// algorithms/ports/):
//   BLOCK_Q  = plan.bwd.block_q = B_r = min(B_c, d) query rows per inner step;
//   BLOCK_K  = plan.bwd.block_k = B_c = ⌈M / 8d⌉ keys per outer step;
//   HEAD_DIM = d (a multiple of 8; the MMA k-step pads it to 16 with zero columns).
// The tiles are padded to multiples of 16 rows (BQ_PAD, BK_PAD: the m16n8k16 granule); padded
// rows are zero-filled and masked, never stored. Eight warps (BWD_THREADS = 256): the
// work of each phase is cut into 16 x 16 granules — S/dP (B_r x B_c), dK/dV (B_c x d), dQ
// (B_r x d) — dealt to the warps; a warp keeps its dK/dV granules (KV_PER_WARP of them,
// contiguous) in registers for the whole outer step: 16 fp32 registers per granule and thread.
// Shared memory (dynamic): Q_i, dO_i (BQ_PAD x DPAD), K_j, V_j (BK_PAD x DPAD), P_ij and dS_ij
// (BQ_PAD x BK_PAD), all 16-bit, and the rows' log-sum-exp and D_i (2 x BQ_PAD fp32).
// Against the plan's SRAM (K_j, V_j, dK_j, dV_j, Q_i, O_i, dO_i, dQ_i at e bytes, S/P and
// dP/dS in registers): dK_j/dV_j live in fp32 registers here and P_ij/dS_ij in shared memory
// (the products Pᵀ dO, dSᵀ Q and dS K need them in another fragment layout than the one they
// are computed in: ldmatrix.trans re-reads them transposed); O_i and dQ_i go HBM <-> registers.
// HBM traffic equals the simulator's count: init writes (N_q + 2 N_k) d e; K_j, V_j once; Q_i,
// O_i, dO_i, dQ_i (storage type), ℓ_i, m_i (fp32) read and dQ_i written once per visited
// (j, i); dK_j, dV_j written once. D_i is computed from the dO_i tile in shared memory and O_i
// read once, as the simulator's line 19.
// Numerics: MMAs in fp16/bf16 with fp32 accumulation (P and dS rounded to the storage type
// for them, as FA-2); dQ_i is rounded to the storage type at every inner step, since it lives
// in HBM at e bytes between steps (the simulator keeps it in fp32: the rounding error grows
// with the number of K/V blocks T_c).
// Dropout (--dropout p; `seed` not null): Z regenerated on chip from the simulator's keep mask
// (attn_dropout.cuh, bit for bit; lines 14-15 and 18): dV_j += (P ∘ Z)ᵀ dO_i, and
// dS = P ∘ (dP ∘ Z − D_i) with the undropped P; the seed is 8 uncounted bytes a CTA.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (attn_common.cuh's attn_t).
#include "attn_common.cuh"
#include "attn_dropout.cuh"

#ifndef BLOCK_Q
#define BLOCK_Q 64
#endif
#ifndef BLOCK_K
#define BLOCK_K 227
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif

#define DPAD ATTN_PAD16(HEAD_DIM)
#define BQ_PAD (((BLOCK_Q + 15) / 16) * 16)
#define BK_PAD (((BLOCK_K + 15) / 16) * 16)
#define BWD_WARPS 8
#define BWD_THREADS (BWD_WARPS * 32)
#define INIT_THREADS 256

constexpr int CPR = DPAD / 8;                                  // 16-byte chunks of a d row
constexpr int CPR_P = BK_PAD / 8;                              // ... of a P / dS row
constexpr int SD_GRANULES = (BQ_PAD / 16) * (BK_PAD / 16);     // S/dP: 16 rows x 16 keys
constexpr int KV_GRANULES = (BK_PAD / 16) * (DPAD / 16);       // dK/dV: 16 keys x 16 columns
constexpr int Q_GRANULES = (BQ_PAD / 16) * (DPAD / 16);        // dQ: 16 rows x 16 columns
constexpr int KV_PER_WARP = (KV_GRANULES + BWD_WARPS - 1) / BWD_WARPS;

static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");
static_assert(KV_PER_WARP <= 12, "dK_j, dV_j exceed the register budget (16 x 12 floats a thread)");

// Line 5: dQ = dK = dV = 0. Grid (B·H): one CTA per head, as the simulator's flash1_bwd_init.
extern "C" __global__ void __launch_bounds__(INIT_THREADS)
flash1_bwd_init(attn_t* __restrict__ dq, attn_t* __restrict__ dk, attn_t* __restrict__ dv,
                int n_q, int n_k) {
    constexpr int CH = HEAD_DIM / 8;
    const long long bh = blockIdx.x;
    for (int idx = threadIdx.x; idx < n_q * CH; idx += INIT_THREADS)
        reinterpret_cast<attn_u4*>(dq + bh * n_q * HEAD_DIM)[idx] = attn_u4{0u, 0u, 0u, 0u};
    for (int idx = threadIdx.x; idx < n_k * CH; idx += INIT_THREADS) {
        reinterpret_cast<attn_u4*>(dk + bh * n_k * HEAD_DIM)[idx] = attn_u4{0u, 0u, 0u, 0u};
        reinterpret_cast<attn_u4*>(dv + bh * n_k * HEAD_DIM)[idx] = attn_u4{0u, 0u, 0u, 0u};
    }
}

// One 16 x 16 C granule (two m16n8 fragments) times `mul`, rounded to the storage type, into
// a swizzled tile with CPR_P chunks a row, at tile rows row0.., columns col0...
__device__ __forceinline__ void granule_to_smem(attn_t* dst, const float (&c)[2][4], float mul,
                                                int row0, int col0, int lane) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
        const int col = col0 + n * 8 + 2 * (lane & 3);
        const int r = row0 + (lane >> 2);
        attn_st_shared32(dst + attn_swizzle(r, col >> 3, CPR_P) + (col & 7),
                         attn_pack2(c[n][0] * mul, c[n][1] * mul));
        attn_st_shared32(dst + attn_swizzle(r + 8, col >> 3, CPR_P) + (col & 7),
                         attn_pack2(c[n][2] * mul, c[n][3] * mul));
    }
}

// acc += Xᵀ Y over the kRows rows of X (BQ_PAD x ., CPR_P chunks) and Y (BQ_PAD x DPAD):
// the granule of Xᵀ at X columns xcol0.. (16 keys) and Y columns ycol0.. (16). Xᵀ's A
// fragments and Y's B fragments both come from ldmatrix.trans. dV_j += Pᵀ dO_i, dK_j += dSᵀ Q_i.
__device__ __forceinline__ void granule_tn(float (&acc)[2][4], const attn_t* x_s, const attn_t* y_s,
                                           int xcol0, int ycol0, int lane) {
#pragma unroll 2
    for (int kk = 0; kk < BQ_PAD / 16; ++kk) {
        unsigned a[4], b[4];
        // stored (rows 0-7, keys 0-7), (rows 0-7, keys 8-15), (rows 8-15, keys 0-7), ...
        // transposed: the A fragments (keys 0-7, k 0-7), (keys 8-15, k 0-7), (keys 0-7, k 8-15)
        const int row = kk * 16 + (lane & 7) + ((lane >> 4) & 1) * 8;
        attn_ldmatrix_x4_trans(a, x_s + attn_swizzle(row, (xcol0 >> 3) + ((lane >> 3) & 1), CPR_P));
        const int yrow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        attn_ldmatrix_x4_trans(b, y_s + attn_swizzle(yrow, (ycol0 >> 3) + (lane >> 4), CPR));
        attn_mma16816(acc[0], a, b[0], b[1]);
        attn_mma16816(acc[1], a, b[2], b[3]);
    }
}

// acc = dS K_j for the granule at dS rows row0.. (16) and K_j columns ycol0.. (16): A from
// ldmatrix on dS's rows, B from ldmatrix.trans on K_j's rows (the reduction runs over keys).
__device__ __forceinline__ void granule_nn(float (&acc)[2][4], const attn_t* x_s, const attn_t* y_s,
                                           int row0, int ycol0, int lane) {
#pragma unroll
    for (int n = 0; n < 2; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll 2
    for (int kk = 0; kk < BK_PAD / 16; ++kk) {
        unsigned a[4], b[4];
        const int arow = row0 + (lane & 7) + ((lane >> 3) & 1) * 8;
        attn_ldmatrix_x4(a, x_s + attn_swizzle(arow, kk * 2 + (lane >> 4), CPR_P));
        const int yrow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        attn_ldmatrix_x4_trans(b, y_s + attn_swizzle(yrow, (ycol0 >> 3) + (lane >> 4), CPR));
        attn_mma16816(acc[0], a, b[0], b[1]);
        attn_mma16816(acc[1], a, b[2], b[3]);
    }
}

// Arguments: q, k, v, dout (B, H, n, d), o (B, H, n_q, d): storage type; l, m (B, H, n_q) fp32
// (the forward's statistics, natural log); dq, dk, dv (B, H, n, d): zero on entry (init),
// dq accumulated, dk, dv written; scale; causal; dropout: seed (2 int32, null without dropout),
// threshold, 1 / (1 - p) (attn_dropout.cuh). Grid (B·H); block BWD_THREADS; dynamic shared
// memory (2 BQ_PAD + 2 BK_PAD) DPAD 2 + 2 BQ_PAD BK_PAD 2 + 2 BQ_PAD 4 bytes.
extern "C" __global__ void __launch_bounds__(BWD_THREADS, 1)
flash1_bwd(const attn_t* __restrict__ q, const attn_t* __restrict__ k, const attn_t* __restrict__ v,
           const attn_t* __restrict__ o, const attn_t* __restrict__ dout,
           const float* __restrict__ l, const float* __restrict__ m, attn_t* __restrict__ dq,
           attn_t* __restrict__ dk, attn_t* __restrict__ dv, int n_q, int n_k, float scale,
           int causal, const int* __restrict__ seed, int threshold, float inv_keep) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // Q_i:  BQ_PAD x DPAD
    attn_t* do_s = q_s + BQ_PAD * DPAD;                          // dO_i: BQ_PAD x DPAD
    attn_t* k_s = do_s + BQ_PAD * DPAD;                          // K_j:  BK_PAD x DPAD
    attn_t* v_s = k_s + BK_PAD * DPAD;                           // V_j:  BK_PAD x DPAD
    attn_t* p_s = v_s + BK_PAD * DPAD;                           // P_ij: BQ_PAD x BK_PAD
    attn_t* ds_s = p_s + BQ_PAD * BK_PAD;                        // dS_ij
    float* lse2_s = reinterpret_cast<float*>(ds_s + BQ_PAD * BK_PAD);   // log2-sum-exp of rows
    float* dlt_s = lse2_s + BQ_PAD;                              // D_i

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const long long bh = blockIdx.x;
    const attn_t* q_h = q + bh * n_q * HEAD_DIM;
    const attn_t* do_h = dout + bh * n_q * HEAD_DIM;
    const attn_t* o_h = o + bh * n_q * HEAD_DIM;
    attn_t* dq_h = dq + bh * n_q * HEAD_DIM;
    const float* l_h = l + bh * n_q;
    const float* m_h = m + bh * n_q;
    const int shift = n_k - n_q;
    const float scale_log2 = scale * ATTN_LOG2E;
    const bool dropout = seed != nullptr;
    const unsigned long long seed_mix = dropout ? attn_dropout_seed_mix(seed) : 0ull;

    for (int c0 = 0; c0 < n_k; c0 += BLOCK_K) {                // line 6: for j = 1..T_c
        const int c1 = min(c0 + BLOCK_K, n_k);
        __syncthreads();                                       // every warp is done with K_j, V_j
        attn_load_tile_async<BK_PAD, DPAD, BWD_THREADS>(k_s, k + bh * n_k * HEAD_DIM, c0, c1, HEAD_DIM, tid);
        attn_load_tile_async<BK_PAD, DPAD, BWD_THREADS>(v_s, v + bh * n_k * HEAD_DIM, c0, c1, HEAD_DIM, tid);
        attn_cp_async_commit();
        float dk_acc[KV_PER_WARP][2][4], dv_acc[KV_PER_WARP][2][4];    // line 8: dK_j = dV_j = 0
#pragma unroll
        for (int u = 0; u < KV_PER_WARP; ++u)
#pragma unroll
            for (int n = 0; n < 2; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) dk_acc[u][n][e] = dv_acc[u][n][e] = 0.f;

        const int first_row = causal ? max(0, c0 - shift) : 0;
        for (int r0 = (first_row / BLOCK_Q) * BLOCK_Q; r0 < n_q; r0 += BLOCK_Q) {  // line 9
            const int r1 = min(r0 + BLOCK_Q, n_q);
            __syncthreads();                                   // every warp is done with dS_{i-1}
            attn_load_tile_async<BQ_PAD, DPAD, BWD_THREADS>(q_s, q_h, r0, r1, HEAD_DIM, tid);  // line 10
            attn_load_tile_async<BQ_PAD, DPAD, BWD_THREADS>(do_s, do_h, r0, r1, HEAD_DIM, tid);
            attn_cp_async_commit();
            attn_cp_async_wait<0>();                           // Q_i, dO_i (and K_j, V_j) landed
            __syncthreads();

            // -- line 10 (ℓ_i, m_i, O_i) and line 19: per row log2(ℓ e^m) and D_i = rowsum(dO_i ∘ O_i),
            //    one warp per row; padded rows and rows that see no key get P = 0 (lse = +inf) --
            for (int r = warp; r < BQ_PAD; r += BWD_WARPS) {
                const int row = r0 + r;
                float dot = 0.f;
                if (row < r1)
                    for (int c = lane; c < HEAD_DIM; c += 32)
                        dot = fmaf(attn_to_f32(do_s[attn_swizzle(r, c >> 3, CPR) + (c & 7)]),
                                   attn_to_f32(o_h[(long long)row * HEAD_DIM + c]), dot);
                dot = attn_warp_sum(dot);
                if (lane == 0) {
                    const float li = row < r1 ? l_h[row] : 0.f;
                    attn_st_shared_f32(lse2_s + r, li > 0.f ? m_h[row] * ATTN_LOG2E + log2f(li)
                                                            : -ATTN_NEG_INF);
                    attn_st_shared_f32(dlt_s + r, dot);
                }
            }
            __syncthreads();                                   // row statistics visible

            // -- lines 11-20: S, P, dP, dS, one 16 x 16 granule at a time, into shared memory --
            for (int g = warp; g < SD_GRANULES; g += BWD_WARPS) {
                const int rt = (g / (BK_PAD / 16)) * 16, kt = (g % (BK_PAD / 16)) * 16;
                float s[2][4], dp[2][4];
                attn_warp_qk<16, DPAD>(s, q_s, k_s + kt * DPAD, rt, lane);          // line 11
                if (c0 + kt + 16 > c1 || (causal && c0 + kt + 15 > r0 + rt + shift))
                    attn_warp_mask<16>(s, r0 + rt, c0 + kt, c1, shift, causal != 0, lane);  // 12
                attn_warp_qk<16, DPAD>(dp, do_s, v_s + kt * DPAD, rt, lane);        // line 17
                float pz[2][4];                                // P ∘ Z (P without dropout)
#pragma unroll
                for (int n = 0; n < 2; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int r = rt + (lane >> 2) + 8 * (e >> 1);
                        // line 13: P = exp(scale S - m) / ℓ = exp2(scale log2(e) S - log2(ℓ e^m))
                        s[n][e] = exp2f(fmaf(s[n][e], scale_log2, -attn_ld_shared_f32(lse2_s + r)));
                        const float z = dropout ? attn_dropout_z(seed_mix, bh * n_q, r0 + r,
                                                                 c0 + kt + n * 8 + 2 * (lane & 3) + (e & 1),
                                                                 n_k, threshold, inv_keep)
                                                : 1.f;           // lines 14-15, 18: Z
                        pz[n][e] = s[n][e] * z;
                        dp[n][e] = s[n][e] * (dp[n][e] * z - attn_ld_shared_f32(dlt_s + r));  // 20
                    }
                granule_to_smem(p_s, pz, 1.f, rt, kt, lane);
                granule_to_smem(ds_s, dp, scale, rt, kt, lane);                     // τ dS
            }
            __syncthreads();                                   // P_ij and dS_ij are complete

            // -- line 16: dV_j += P_ijᵀ dO_i; line 22: dK_j += dS_ijᵀ Q_i (the warp's granules) --
#pragma unroll
            for (int u = 0; u < KV_PER_WARP; ++u) {
                const int g = warp * KV_PER_WARP + u;
                if (g < KV_GRANULES) {
                    const int kt = (g / (DPAD / 16)) * 16, dc = (g % (DPAD / 16)) * 16;
                    granule_tn(dv_acc[u], p_s, do_s, kt, dc, lane);
                    granule_tn(dk_acc[u], ds_s, q_s, kt, dc, lane);
                }
            }

            // -- line 21: dQ_i += dS_ij K_j, read-modify-written in HBM --
            for (int g = warp; g < Q_GRANULES; g += BWD_WARPS) {
                const int rt = (g / (DPAD / 16)) * 16, dc = (g % (DPAD / 16)) * 16;
                float acc[2][4];
                granule_nn(acc, ds_s, k_s, rt, dc, lane);
#pragma unroll
                for (int n = 0; n < 2; ++n) {
                    const int col = dc + n * 8 + 2 * (lane & 3);
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        const int row = r0 + rt + (lane >> 2) + 8 * h;
                        if (row >= r1 || col >= HEAD_DIM) continue;
                        unsigned* dst = reinterpret_cast<unsigned*>(dq_h + (long long)row * HEAD_DIM + col);
                        const attn_f2 old = attn_unpack2(*dst);
                        *dst = attn_pack2(old.x + acc[n][2 * h], old.y + acc[n][2 * h + 1]);
                    }
                }
            }
        }
        attn_cp_async_wait<0>();                               // K_j, V_j landed (no Q block seen)

        // -- line 24: dK_j, dV_j -> HBM, from the warps' registers --
#pragma unroll
        for (int u = 0; u < KV_PER_WARP; ++u) {
            const int g = warp * KV_PER_WARP + u;
            if (g >= KV_GRANULES) continue;
            const int kt = (g / (DPAD / 16)) * 16, dc = (g % (DPAD / 16)) * 16;
#pragma unroll
            for (int n = 0; n < 2; ++n) {
                const int col = dc + n * 8 + 2 * (lane & 3);
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int key = c0 + kt + (lane >> 2) + 8 * h;
                    if (key >= c1 || col >= HEAD_DIM) continue;
                    const long long at = (bh * n_k + key) * HEAD_DIM + col;
                    *reinterpret_cast<unsigned*>(dk + at) = attn_pack2(dk_acc[u][n][2 * h], dk_acc[u][n][2 * h + 1]);
                    *reinterpret_cast<unsigned*>(dv + at) = attn_pack2(dv_acc[u][n][2 * h], dv_acc[u][n][2 * h + 1]);
                }
            }
        }
    }
}
