// flash1_fwd.cu — FlashAttention forward as published (Dao et al. 2022, arXiv 2205.14135,
// Algorithm 1), the port of algorithms/flash1/__init__.py.
//
// What it does: O = softmax(scale · Q Kᵀ [+ causal mask]) V, fp16 in and out, with the loop
// order of Algorithm 1: one CTA per batch·head; the OUTER loop walks the K/V blocks K_j, V_j
// (B_c keys, loaded into shared memory once), the INNER loop walks the Q blocks, and for each
// (j, i) the CTA reads Q_i, O_i, ℓ_i, m_i from HBM, folds S_ij = scale · Q_i K_jᵀ into them
// with the online softmax (lines 9-12) and writes O_i, ℓ_i, m_i back (line 13). O lives in the
// output tensor (fp16) between steps, ℓ and m in fp32 work arrays; the flash1_init kernel
// sets O = 0, ℓ = 0, m = -inf first (line 2). Causal (bottom-right aligned): the inner loop
// starts at the first Q block that sees key c0, and tiles crossing the diagonal are masked.
// Ragged N: zero-filled loads, masked keys, skipped stores.
//
// Tile sizes (compile-time defines from the plan via algorithms/ports/):
//   BLOCK_Q = plan.block_q = B_r = min(ceil(M/4d), d); one warp per 16 rows of the block
//             padded to 16 (padded rows are never stored);
//   BLOCK_K = plan.block_k = B_c = ceil(M/4d) keys; the K_j/V_j tiles are padded to a
//             multiple of SUB_K (= 32) rows, and S_ij is computed SUB_K keys at a time in
//             registers (the paper's model keeps the whole S_ij in SRAM; the result is the
//             same because the online softmax is exact);
//   HEAD_DIM = d (a multiple of 8).
// Shared memory: (BQ_PAD + 2 BK_PAD) x HEAD_DIM x 2 bytes (Q_i, K_j, V_j); O_i, ℓ_i, m_i are
// held in registers between their HBM load and store. The plan's SRAM also holds S_ij and
// O_i; algorithms/ports declares the port's own footprint, which is smaller.
// HBM traffic equals the simulator's count: K, V once; Q_i, O_i (fp16), ℓ_i, m_i (fp32) read
// and O_i, ℓ_i, m_i written once per visited (j, i); the init kernel writes O, ℓ, m once.
// Tensor cores: mma.sync m16n8k16 (fp16 or bf16 in, fp32 accumulate), as the plan's tc_path.
// Dropout (--dropout p, training; `seed` not null): Algorithm 2 lines 14-15 — the ℓ~ of a
// block sums the undropped P~, while P~ ∘ Z feeds P~ V_j; Z is regenerated on chip from the
// simulator's keep mask (attn_dropout.cuh), bit for bit. The seed is 8 bytes a CTA that the
// simulator does not count.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_common.cuh"
#include "attn_dropout.cuh"

#ifndef BLOCK_Q
#define BLOCK_Q 64
#endif
#ifndef BLOCK_K
#define BLOCK_K 454
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#define SUB_K 32

#define DPAD ATTN_PAD16(HEAD_DIM)
#define BQ_PAD (((BLOCK_Q + 15) / 16) * 16)
#define BK_PAD (((BLOCK_K + SUB_K - 1) / SUB_K) * SUB_K)
#define NWARPS (BQ_PAD / 16)
#define NTHREADS (NWARPS * 32)
#define INIT_THREADS 256

static_assert(BQ_PAD <= 256, "BLOCK_Q must be <= 256");
static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");

// Line 2: O = 0 (fp16), ℓ = 0, m = -inf (fp32). Grid (B·H): one CTA per head, as the
// simulator's ``flash1_init`` kernel.
extern "C" __global__ void __launch_bounds__(INIT_THREADS)
flash1_init(attn_t* __restrict__ o, float* __restrict__ l, float* __restrict__ m, int n_q) {
    for (int row = threadIdx.x; row < n_q; row += INIT_THREADS) {
        const long long r = (long long)blockIdx.x * n_q + row;
        l[r] = 0.f;
        m[r] = ATTN_NEG_INF;
        for (int c = 0; c < HEAD_DIM; c += 8)
            *reinterpret_cast<attn_u4*>(o + r * HEAD_DIM + c) = attn_u4{0u, 0u, 0u, 0u};
    }
}

// Arguments: q (B, H, n_q, d), k and v (B, H / kv_group, n_k, d), o (B, H, n_q, d): fp16;
// l, m (B, H, n_q): fp32 running statistics in the natural-log domain (as the paper and the
// simulator); scale; causal; dropout: seed (2 int32, null without dropout), threshold and
// 1 / (1 - p) (attn_dropout.cuh). Grid (B·H); block NTHREADS; dynamic shared memory
// (BQ_PAD + 2 BK_PAD) * DPAD * 2 bytes.
extern "C" __global__ void __launch_bounds__(NTHREADS)
flash1_fwd(const attn_t* __restrict__ q, const attn_t* __restrict__ k, const attn_t* __restrict__ v,
           attn_t* __restrict__ o, float* __restrict__ l, float* __restrict__ m, int n_q,
           int n_k, int heads, int kv_group, float scale, int causal,
           const int* __restrict__ seed, int threshold, float inv_keep) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // Q_i: BQ_PAD x DPAD
    attn_t* k_s = q_s + BQ_PAD * DPAD;                           // K_j: BK_PAD x DPAD
    attn_t* v_s = k_s + BK_PAD * DPAD;                           // V_j: BK_PAD x DPAD

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wrow = warp * 16;
    const int bh = blockIdx.x;
    const int kv_bh = (bh / heads) * (heads / kv_group) + (bh % heads) / kv_group;
    const attn_t* q_h = q + (long long)bh * n_q * HEAD_DIM;
    const attn_t* k_h = k + (long long)kv_bh * n_k * HEAD_DIM;
    const attn_t* v_h = v + (long long)kv_bh * n_k * HEAD_DIM;
    attn_t* o_h = o + (long long)bh * n_q * HEAD_DIM;
    float* l_h = l + (long long)bh * n_q;
    float* m_h = m + (long long)bh * n_q;
    const int shift = n_k - n_q;
    const float scale_log2 = scale * ATTN_LOG2E;
    const bool dropout = seed != nullptr;
    const unsigned long long seed_mix = dropout ? attn_dropout_seed_mix(seed) : 0ull;

    for (int c0 = 0; c0 < n_k; c0 += BLOCK_K) {                // line 5: for j = 1..T_c
        const int c1 = min(c0 + BLOCK_K, n_k);
        __syncthreads();                                       // previous K_j, V_j, Q_i unused
        attn_load_tile_async<BK_PAD, DPAD, NTHREADS>(k_s, k_h, c0, c1, HEAD_DIM, tid);  // line 6
        attn_load_tile_async<BK_PAD, DPAD, NTHREADS>(v_s, v_h, c0, c1, HEAD_DIM, tid);
        attn_cp_async_commit();
        const int first_row = causal ? max(0, c0 - shift) : 0;
        for (int r0 = (first_row / BLOCK_Q) * BLOCK_Q; r0 < n_q; r0 += BLOCK_Q) {  // line 7
            const int r1 = min(r0 + BLOCK_Q, n_q);
            __syncthreads();                                   // every warp is done with Q_{i-1}
            attn_load_tile_async<BQ_PAD, DPAD, NTHREADS>(q_s, q_h, r0, r1, HEAD_DIM, tid);  // line 8
            attn_cp_async_commit();
            // line 8 (continued): O_i, ℓ_i, m_i -> registers, in the MMA's C layout
            float o_i[DPAD / 8][4], l_i[2], m_i[2];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = r0 + wrow + (lane >> 2) + 8 * h;
                const bool ok = row < r1;
                l_i[h] = ok ? l_h[row] : 0.f;
                m_i[h] = ok ? m_h[row] : ATTN_NEG_INF;
#pragma unroll
                for (int n = 0; n < DPAD / 8; ++n) {
                    const int col = n * 8 + 2 * (lane & 3);
                    attn_f2 x{0.f, 0.f};
                    if (ok && col < HEAD_DIM)
                        x = attn_unpack2(*reinterpret_cast<const unsigned*>(o_h + (long long)row * HEAD_DIM + col));
                    o_i[n][2 * h] = x.x;
                    o_i[n][2 * h + 1] = x.y;
                }
            }
            attn_cp_async_wait<0>();
            __syncthreads();
            // lines 9-10 over the block, SUB_K keys at a time: block max m~ (base 2),
            // block sum ℓ~ and un-normalized P~ V_j accumulate in registers
            float acc[DPAD / 8][4], mt[2], lt[2];
            attn_softmax_init<DPAD>(acc, mt, lt);
            for (int sub = 0; sub < BK_PAD; sub += SUB_K) {
                const int key0 = c0 + sub;
                if (key0 >= c1) break;
                if (causal && key0 > (r1 - 1) + shift) break;  // no row of the block sees it
                float s[SUB_K / 8][4];
                attn_warp_qk<SUB_K, DPAD>(s, q_s, k_s + sub * DPAD, wrow, lane);
                if (key0 + SUB_K > c1 || (causal && key0 + SUB_K - 1 > r0 + shift))
                    attn_warp_mask<SUB_K>(s, r0 + wrow, key0, c1, shift, causal != 0, lane);
                attn_warp_softmax<SUB_K, DPAD>(s, acc, mt, lt, scale_log2);
                if (dropout)                                   // lines 14-15: P~ ∘ Z (ℓ~ undropped)
#pragma unroll
                    for (int n = 0; n < SUB_K / 8; ++n)
#pragma unroll
                        for (int e = 0; e < 4; ++e)
                            s[n][e] *= attn_dropout_z(seed_mix, (long long)bh * n_q,
                                                      r0 + wrow + (lane >> 2) + 8 * (e >> 1),
                                                      key0 + n * 8 + 2 * (lane & 3) + (e & 1),
                                                      n_k, threshold, inv_keep);
                attn_warp_pv<SUB_K, DPAD>(acc, s, v_s + sub * DPAD, lane);
            }
            attn_quad_sum(lt);
            // lines 11-12: m_new = max(m_i, m~), ℓ_new = e^(m_i - m_new) ℓ_i + e^(m~ - m_new) ℓ~,
            // O_i = (ℓ_i e^(m_i - m_new) O_i + e^(m~ - m_new) P~V_j) / ℓ_new  (m_i in nats)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float m_blk = mt[h] * ATTN_LN2;          // block max, natural log
                const float m_new = fmaxf(m_i[h], m_blk);
                const float base = m_new == ATTN_NEG_INF ? 0.f : m_new;
                const float a_old = __expf(m_i[h] - base);
                // acc holds P~ scaled by exp2(x - mt): its weight is e^(m~ - m_new)
                const float a_blk = mt[h] == ATTN_NEG_INF ? 0.f : __expf(m_blk - base);
                const float l_new = a_old * l_i[h] + a_blk * lt[h];
                const float inv = l_new > 0.f ? 1.f / l_new : 0.f;
#pragma unroll
                for (int n = 0; n < DPAD / 8; ++n) {
                    o_i[n][2 * h] = (l_i[h] * a_old * o_i[n][2 * h] + a_blk * acc[n][2 * h]) * inv;
                    o_i[n][2 * h + 1] = (l_i[h] * a_old * o_i[n][2 * h + 1] + a_blk * acc[n][2 * h + 1]) * inv;
                }
                l_i[h] = l_new;
                m_i[h] = m_new;
            }
            // line 13: O_i, ℓ_i, m_i -> HBM
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = r0 + wrow + (lane >> 2) + 8 * h;
                if (row >= r1) continue;
#pragma unroll
                for (int n = 0; n < DPAD / 8; ++n) {
                    const int col = n * 8 + 2 * (lane & 3);
                    if (col < HEAD_DIM)
                        *reinterpret_cast<unsigned*>(o_h + (long long)row * HEAD_DIM + col) =
                            attn_pack2(o_i[n][2 * h], o_i[n][2 * h + 1]);
                }
                if ((lane & 3) == 0) {
                    l_h[row] = l_i[h];
                    m_h[row] = m_i[h];
                }
            }
        }
    }
}
