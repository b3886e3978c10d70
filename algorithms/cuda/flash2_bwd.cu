// flash2_bwd.cu — FlashAttention-2 backward (Dao 2023, arXiv 2307.08691, Algorithm 2 and
// Section 3.2), the port of algorithms/flash2/backward.py.
//
// What it does: given fp16 Q, K, V, dO (batch, heads, N, d), the forward's O and fp32 lse,
// the gradients dQ, dK, dV of O = softmax(scale · Q Kᵀ [+ causal mask]) V, in three kernels
// as the simulator launches them:
//   flash2_bwd_preprocess (⌈N_q/B_r⌉ × B·H): D = rowsum(dO ∘ O) in fp32, and the fp32 dQ
//       accumulator of the block's rows cleared;
//   flash2_bwd (⌈N_k/B_c⌉ × B·H): one CTA per K/V column block keeps K_j, V_j in shared memory
//       and dK_j, dV_j in fp32 registers, loops over the Q row blocks i recomputing
//       P_ij = exp(scale · Q_i K_jᵀ − lse_i) (no softmax statistics are recomputed: lse is
//       exact), dV_j += P_ijᵀ dO_i, dP = dO_i V_jᵀ, dS = P ∘ (dP − D_i), dK_j += dS_ijᵀ Q_i,
//       and adds dS_ij K_j to the fp32 dQ accumulator with atomics (other K/V blocks of the
//       head add to the same rows); dK_j = scale · dK_j and dV_j are written once at the end;
//   flash2_bwd_convert_dq (⌈N_q/B_r⌉ × B·H): dQ = scale · dQaccum, fp32 -> storage type.
// Causal masking is bottom-right aligned (key j visible to query i iff j <= i + N_k − N_q),
// as the forward: a K/V block starts at the first Q block that can see it (the simulator's
// loop); rows that see no key have lse = −inf and get P = 0. Ragged N: zero-filled loads,
// masked keys, skipped stores and atomics. Multi-head only (kv_heads == heads): the simulator
// does not model GQA's backward, and algorithms/ports refuses it.
//
// Tile sizes (compile-time defines, from the simulator's backward plan, plan.bwd, by
// algorithms/ports/; the three kernels share one module):
//   BLOCK_Q   = plan.bwd.block_q (B_r): query rows per Q block (preprocess/convert: rows per CTA).
//   BLOCK_K   = plan.bwd.block_k (B_c): keys per CTA of flash2_bwd.
//   HEAD_DIM  = d (a multiple of 8); the MMA k-step pads it to 16 with zero columns.
//   BWD_WARPS = warps of flash2_bwd (8 for the plans' 128 x 128 and 64 x 128 tiles, as FA-2's
//               sm80 backward; fewer only for tiles too small to split 8 ways). The warps tile
//               S/dP (B_r x B_c), dK/dV (B_c x d) and dQ (B_r x d) each on its own layout;
//               ports.flash2_bwd_warps picks the largest count all three divide evenly.
// Shared memory (dynamic, flash2_bwd): Q_i, dO_i (B_r x d), K_j, V_j (B_c x d), P_ij and
// dS_ij (B_r x B_c), all 16-bit — the plan's smem_bytes exactly when d is a multiple of 16.
// P and dS go through shared memory because the products Pᵀ dO, dSᵀ Q and dS K need them in
// another fragment layout than the one S and dP are computed in (ldmatrix.trans re-reads
// them transposed). Q_i/dO_i have one buffer (as the plan): the copy of Q_{i+1}, dO_{i+1}
// overlaps the dQ product and its atomics. preprocess/convert use no shared memory.
// HBM traffic equals the simulator's count: preprocess reads dO, O, writes D (fp32) and the
// cleared dQaccum; flash2_bwd reads K_j, V_j once, Q_i, dO_i, lse_i, D_i once per visited
// tile, atomically adds B_r x d fp32 per visited tile (on a GPU the atomics execute in L2;
// the simulator charges a read and a write, see flash2_bwd.py), writes dK_j, dV_j once;
// convert reads dQaccum, writes dQ.
// Tensor cores: mma.sync.m16n8k16 (fp16 or bf16 in, fp32 accumulate) with ldmatrix fragment
// loads (.trans for the transposed operands) — the plan's tc_path "mma_sync". P and dS are
// rounded to the storage type for the MMAs (as FA-2); D, lse and all accumulators are fp32.
// Dropout (--dropout p): compiled in with -DATTN_DROPOUT=1 (algorithms/ports adds it with the
// workload's dropout, to the three kernels' module and to the forward), as the simulator's
// flash2_bwd: Z regenerated on chip from the simulator's keep mask (attn_dropout.cuh, bit for
// bit, the same Z as the forward), dV_j += (P ∘ Z)ᵀ dO_i and dS = P ∘ (dP ∘ Z − D_i) with the
// undropped P (D = rowsum(dO ∘ O) of the dropped forward's O). Each entry is hashed once: its
// keep bit waits in a register word (attn_dropout.cuh AttnKeepBits, not a float of Z) between
// P ∘ Z and dS. A define, not a runtime flag, so that the kernel without dropout keeps its
// registers (docs/gpu.md "The flash2 dropout").
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (attn_common.cuh's attn_t).
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
#define BLOCK_K 128
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef BWD_WARPS
#define BWD_WARPS 8
#endif

#define DPAD ATTN_PAD16(HEAD_DIM)
#define NTHREADS (BWD_WARPS * 32)
#define PRE_THREADS 256          // preprocess / convert: the simulator's THREADS_PER_CTA

constexpr int bwd_min(int a, int b) { return a < b ? a : b; }

// Register budget: dK_j, dV_j take 2 B_c d / (32 BWD_WARPS) fp32 registers a thread (64 at
// d = 64, 128 at d = 128 with the plans' B_c = 128); everything else is kept in chunks
// around them. The chunk sizes and the unrolling below are what leaves ptxas without spills
// at the A100/H100 plan sizes (244-255 registers; see docs/gpu.md).
// S / dP phase: WS_R x WS_C warps over the B_r x B_c tile; each warp S_MT row tiles of 16
// and S_COLS keys, taken S_CH keys at a time so that S and dP of one chunk (not of the whole
// row) are live next to the dK/dV accumulators.
constexpr int WS_R = bwd_min(BWD_WARPS, BLOCK_Q / 16);
constexpr int WS_C = BWD_WARPS / WS_R;
constexpr int S_MT = BLOCK_Q / 16 / WS_R;
constexpr int S_COLS = BLOCK_K / WS_C;
// With dropout, 32 keys at d <= 64: the keep mask's hashing needs the registers of 32 of S and
// dP's floats (64 keys spill 28 B on sm_90; 32 spill nothing, docs/gpu.md).
constexpr int S_CH = bwd_min(S_COLS, DPAD > 64 ? 16 : (ATTN_DROPOUT ? 32 : 64));
// dK / dV phase: WKV_R x WKV_C warps over B_c x DPAD.
constexpr int WKV_R = bwd_min(BWD_WARPS, BLOCK_K / 16);
constexpr int WKV_C = BWD_WARPS / WKV_R;
constexpr int KV_MT = BLOCK_K / 16 / WKV_R;
constexpr int KV_DW = DPAD / WKV_C;
// dQ phase: WQ_R x WQ_C warps over B_r x DPAD.
constexpr int WQ_R = bwd_min(BWD_WARPS, BLOCK_Q / 16);
constexpr int WQ_C = BWD_WARPS / WQ_R;
constexpr int Q_MT = BLOCK_Q / 16 / WQ_R;
constexpr int Q_DW = DPAD / WQ_C;
constexpr int Q_CH = bwd_min(Q_DW, DPAD > 64 ? 32 : 16);     // dQ columns per MMA pass
// Unrolling of the reduction loops of the three products: full for d <= 64; for larger d
// a rolled loop keeps ptxas from hoisting every fragment address out of the Q-block loop.
constexpr int KK_UNROLL = DPAD > 64 ? 1 : 16;

static_assert(BLOCK_Q % 16 == 0 && BLOCK_K % 16 == 0, "BLOCK_Q, BLOCK_K: multiples of 16");
static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");
static_assert(WS_R * WS_C == BWD_WARPS && (BLOCK_Q / 16) % WS_R == 0 && S_COLS % 16 == 0
              && S_COLS % S_CH == 0, "BWD_WARPS does not divide the B_r x B_c tile");
static_assert(WKV_R * WKV_C == BWD_WARPS && (BLOCK_K / 16) % WKV_R == 0 && KV_DW % 16 == 0,
              "BWD_WARPS does not divide the B_c x d tile");
static_assert(WQ_R * WQ_C == BWD_WARPS && (BLOCK_Q / 16) % WQ_R == 0 && Q_DW % 16 == 0
              && Q_DW % Q_CH == 0,
              "BWD_WARPS does not divide the B_r x d tile");

#if ATTN_DROPOUT
// bwd_frag_to_smem of P ∘ Z: kept entries times 1 / (1 - p), dropped ones 0.
template <int kMT, int kN>
__device__ __forceinline__ void bwd_dropped_to_smem(attn_t* dst, const float (&c)[kMT][kN / 8][4],
                                                    const AttnKeepBits<kN> (&keep)[kMT],
                                                    float inv_keep, int row0, int col0, int cpr,
                                                    int lane) {
#pragma unroll
    for (int t = 0; t < kMT; ++t) {
#pragma unroll
        for (int n = 0; n < kN / 8; ++n) {
            float z[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) z[e] = keep[t].kept(n, e) ? c[t][n][e] * inv_keep : 0.f;
            const int col = col0 + n * 8 + 2 * (lane & 3);
            const int r = row0 + 16 * t + (lane >> 2);
            attn_st_shared32(dst + attn_swizzle(r, col >> 3, cpr) + (col & 7), attn_pack2(z[0], z[1]));
            attn_st_shared32(dst + attn_swizzle(r + 8, col >> 3, cpr) + (col & 7),
                             attn_pack2(z[2], z[3]));
        }
    }
}
#endif

// Write a warp's fp32 C fragments (kMT row tiles from `row0`, kN 8-column tiles from `col0`)
// times `mul`, rounded to the storage type, into a swizzled tile with `cpr` 16-byte chunks a row.
template <int kMT, int kN>
__device__ __forceinline__ void bwd_frag_to_smem(attn_t* dst, const float (&c)[kMT][kN][4],
                                                 float mul, int row0, int col0, int cpr, int lane) {
#pragma unroll
    for (int t = 0; t < kMT; ++t) {
#pragma unroll
        for (int n = 0; n < kN; ++n) {
            const int col = col0 + n * 8 + 2 * (lane & 3);
            const int r = row0 + 16 * t + (lane >> 2);
            attn_st_shared32(dst + attn_swizzle(r, col >> 3, cpr) + (col & 7),
                               attn_pack2(c[t][n][0] * mul, c[t][n][1] * mul));
            attn_st_shared32(dst + attn_swizzle(r + 8, col >> 3, cpr) + (col & 7),
                               attn_pack2(c[t][n][2] * mul, c[t][n][3] * mul));
        }
    }
}

// acc[t] += X_sᵀ Y_s for the warp's kMT tiles of 16 rows of Xᵀ (columns `xcol0` + 16 t of X)
// and kDW columns of Y from `ycol0`; X_s is kRows x (8 xcpr), Y_s kRows x (8 ycpr), both
// swizzled with the reduction running over their kRows rows. Xᵀ comes from ldmatrix.trans on
// X's rows (the A fragment of the transposed matrix), Y from ldmatrix.trans as the B operand.
// dV_j += Pᵀ dO_i and dK_j += dSᵀ Q_i.
template <int kMT, int kDW, int kRows>
__device__ __forceinline__ void bwd_warp_tn(float (&acc)[kMT][kDW / 8][4], const attn_t* x_s,
                                            int xcpr, const attn_t* y_s, int ycpr, int xcol0,
                                            int ycol0, int lane) {
#pragma unroll KK_UNROLL
    for (int kk = 0; kk < kRows / 16; ++kk) {
        unsigned a[kMT][4];
#pragma unroll
        for (int t = 0; t < kMT; ++t) {
            // matrices (X rows 0-7, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 0-7), ...
            // transposed: Xᵀ (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), ...
            const int xrow = kk * 16 + (lane & 7) + ((lane >> 4) & 1) * 8;
            const int xch = ((xcol0 + 16 * t) >> 3) + ((lane >> 3) & 1);
            attn_ldmatrix_x4_trans(a[t], x_s + attn_swizzle(xrow, xch, xcpr));
        }
#pragma unroll
        for (int n = 0; n < kDW / 16; ++n) {
            unsigned b[4];
            const int yrow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            attn_ldmatrix_x4_trans(b, y_s + attn_swizzle(yrow, (ycol0 >> 3) + n * 2 + (lane >> 4),
                                                         ycpr));
#pragma unroll
            for (int t = 0; t < kMT; ++t) {
                attn_mma16816(acc[t][2 * n], a[t], b[0], b[1]);
                attn_mma16816(acc[t][2 * n + 1], a[t], b[2], b[3]);
            }
        }
    }
}

// acc = X_s Y_s for the warp's kMT row tiles of X from `xrow0` (X_s: rows x kK, xcpr chunks)
// and kDW columns of Y_s (kK x ., ycpr chunks) from `ycol0`: dQ_i part = dS_ij K_j.
template <int kMT, int kDW, int kK>
__device__ __forceinline__ void bwd_warp_nn(float (&acc)[kMT][kDW / 8][4], const attn_t* x_s,
                                            int xcpr, const attn_t* y_s, int ycpr, int xrow0,
                                            int ycol0, int lane) {
#pragma unroll
    for (int t = 0; t < kMT; ++t)
#pragma unroll
        for (int n = 0; n < kDW / 8; ++n) acc[t][n][0] = acc[t][n][1] = acc[t][n][2] = acc[t][n][3] = 0.f;
#pragma unroll KK_UNROLL
    for (int kk = 0; kk < kK / 16; ++kk) {
        unsigned a[kMT][4];
#pragma unroll
        for (int t = 0; t < kMT; ++t) {
            const int arow = xrow0 + 16 * t + (lane & 7) + ((lane >> 3) & 1) * 8;
            attn_ldmatrix_x4(a[t], x_s + attn_swizzle(arow, kk * 2 + (lane >> 4), xcpr));
        }
#pragma unroll
        for (int n = 0; n < kDW / 16; ++n) {
            unsigned b[4];
            const int yrow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            attn_ldmatrix_x4_trans(b, y_s + attn_swizzle(yrow, (ycol0 >> 3) + n * 2 + (lane >> 4),
                                                         ycpr));
#pragma unroll
            for (int t = 0; t < kMT; ++t) {
                attn_mma16816(acc[t][2 * n], a[t], b[0], b[1]);
                attn_mma16816(acc[t][2 * n + 1], a[t], b[2], b[3]);
            }
        }
    }
}

// Arguments: dout, o (B, H, n_q, d) storage type; delta (B, H, n_q) fp32 out; dq_acc
// (B, H, n_q, d) fp32 out (cleared). Grid: (ceil(n_q / BLOCK_Q), B * H); block: PRE_THREADS.
extern "C" __global__ void __launch_bounds__(PRE_THREADS)
flash2_bwd_preprocess(const attn_t* __restrict__ dout, const attn_t* __restrict__ o,
                      float* __restrict__ delta, float* __restrict__ dq_acc, int n_q) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int r0 = blockIdx.x * BLOCK_Q;
    const long long head = (long long)blockIdx.y * n_q;
    const int rows = min(BLOCK_Q, n_q - r0);
    for (int r = warp; r < rows; r += PRE_THREADS / 32) {
        const long long base = (head + r0 + r) * HEAD_DIM;
        float sum = 0.f;
        for (int c = lane; c < HEAD_DIM; c += 32)
            sum = fmaf(attn_to_f32(dout[base + c]), attn_to_f32(o[base + c]), sum);
        sum = attn_warp_sum(sum);
        if (lane == 0) delta[head + r0 + r] = sum;
    }
    float* acc = dq_acc + (head + r0) * HEAD_DIM;
    for (int idx = tid; idx < rows * HEAD_DIM; idx += PRE_THREADS) acc[idx] = 0.f;
}

// Arguments:
//   q, dout (B, H, n_q, d), k, v (B, H, n_k, d): storage type; lse, delta (B, H, n_q) fp32;
//   dq_acc (B, H, n_q, d) fp32, zero on entry, accumulated; dk, dv (B, H, n_k, d) out;
//   scale: softmax scale; causal: 0 or 1.
//   dropout: seed (2 int32, low half first), threshold = round(p 2²⁴), inv_keep = 1 / (1 - p)
//   (attn_dropout.cuh); read only by ATTN_DROPOUT builds (the port passes a null seed, 0 and
//   1 without dropout): one signature for both builds, as the emulator and flash1 expect.
// Grid: (ceil(n_k / BLOCK_K), B * H); block: NTHREADS; dynamic shared memory:
// (2 BLOCK_Q + 2 BLOCK_K) * DPAD * 2 + 2 * BLOCK_Q * BLOCK_K * 2 bytes.
extern "C" __global__ void __launch_bounds__(NTHREADS, 1)
flash2_bwd(const attn_t* __restrict__ q, const attn_t* __restrict__ k,
           const attn_t* __restrict__ v, const attn_t* __restrict__ dout,
           const float* __restrict__ lse, const float* __restrict__ delta,
           float* __restrict__ dq_acc, attn_t* __restrict__ dk, attn_t* __restrict__ dv,
           int n_q, int n_k, float scale, int causal,
           const int* __restrict__ seed, int threshold, float inv_keep) {
    constexpr int CPR = DPAD / 8, CPR_P = BLOCK_K / 8;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);            // Q_i:  BLOCK_Q x DPAD
    attn_t* do_s = q_s + BLOCK_Q * DPAD;                          // dO_i: BLOCK_Q x DPAD
    attn_t* k_s = do_s + BLOCK_Q * DPAD;                          // K_j:  BLOCK_K x DPAD
    attn_t* v_s = k_s + BLOCK_K * DPAD;                           // V_j:  BLOCK_K x DPAD
    attn_t* p_s = v_s + BLOCK_K * DPAD;                           // P_ij: BLOCK_Q x BLOCK_K
    attn_t* ds_s = p_s + BLOCK_Q * BLOCK_K;                       // dS_ij

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int c0 = blockIdx.x * BLOCK_K;                         // first key of the CTA
    const long long bh = blockIdx.y;
    const attn_t* q_h = q + bh * n_q * HEAD_DIM;
    const attn_t* do_h = dout + bh * n_q * HEAD_DIM;
    const float* lse_h = lse + bh * n_q;
    const float* delta_h = delta + bh * n_q;
    float* dq_h = dq_acc + bh * n_q * HEAD_DIM;
#if ATTN_DROPOUT
    const unsigned long long seed_mix = attn_dropout_seed_mix(seed);
#endif

    // causal: Q blocks whose last row cannot see key c0 are skipped (the simulator's loop)
    const int shift = n_k - n_q;
    const int first_row = causal ? max(0, c0 - shift) : 0;
    const int i_begin = first_row / BLOCK_Q, i_end = (n_q + BLOCK_Q - 1) / BLOCK_Q;

    attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(k_s, k + bh * n_k * HEAD_DIM, c0, n_k, HEAD_DIM, tid);
    attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(v_s, v + bh * n_k * HEAD_DIM, c0, n_k, HEAD_DIM, tid);
    if (i_begin < i_end) {
        attn_load_tile_async<BLOCK_Q, DPAD, NTHREADS>(q_s, q_h, i_begin * BLOCK_Q, n_q, HEAD_DIM, tid);
        attn_load_tile_async<BLOCK_Q, DPAD, NTHREADS>(do_s, do_h, i_begin * BLOCK_Q, n_q, HEAD_DIM, tid);
    }
    attn_cp_async_commit();

    float dk_acc[KV_MT][KV_DW / 8][4], dv_acc[KV_MT][KV_DW / 8][4];
#pragma unroll
    for (int t = 0; t < KV_MT; ++t)
#pragma unroll
        for (int n = 0; n < KV_DW / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) dk_acc[t][n][e] = dv_acc[t][n][e] = 0.f;

    const float scale_log2 = scale * ATTN_LOG2E;
    const int s_row = (warp / WS_C) * S_MT * 16, s_col = (warp % WS_C) * S_COLS;
    const int kv_row = (warp / WKV_C) * KV_MT * 16, kv_col = (warp % WKV_C) * KV_DW;
    const int q_row = (warp / WQ_C) * Q_MT * 16, q_col = (warp % WQ_C) * Q_DW;

    for (int i = i_begin; i < i_end; ++i) {
        const int r0 = i * BLOCK_Q;
        attn_cp_async_wait<0>();                   // Q_i, dO_i (and K_j, V_j) have landed
        __syncthreads();                           // ... and every warp is done with dS of i-1

        // -- P = exp(scale S - lse) and dS = P ∘ (dO Vᵀ - D) for the warp's rows and keys
        //    (dropout: P ∘ Z to p_s, dS = P ∘ (dO Vᵀ ∘ Z - D)) --
        float lse2[S_MT][2], dlt[S_MT][2];
#pragma unroll
        for (int t = 0; t < S_MT; ++t) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = r0 + s_row + 16 * t + (lane >> 2) + 8 * h;
                // rows past n_q and rows that see no key (lse = -inf) get P = exp2(-inf) = 0
                const float l = row < n_q ? lse_h[row] : ATTN_NEG_INF;
                lse2[t][h] = l == ATTN_NEG_INF ? -ATTN_NEG_INF : l * ATTN_LOG2E;
                dlt[t][h] = row < n_q ? delta_h[row] : 0.f;
            }
        }
#pragma unroll
        for (int cc = 0; cc < S_COLS / S_CH; ++cc) {
            const int col0 = s_col + cc * S_CH;          // within the tile
#if ATTN_DROPOUT
            // Z of the chunk, hashed once and before S exists (its keep bits live on to dS)
            AttnKeepBits<S_CH> keep[S_MT];
#pragma unroll
            for (int t = 0; t < S_MT; ++t)
                keep[t].draw(seed_mix, bh * n_q, r0 + s_row + 16 * t, c0 + col0, n_k, threshold,
                             lane);
#endif
            float s[S_MT][S_CH / 8][4];
            attn_warp_qk_mt<S_MT, S_CH, DPAD>(s, q_s, k_s + col0 * DPAD, s_row, lane);
            const int key_end = min(c0 + col0 + S_CH, n_k);
            const bool mask = c0 + col0 + S_CH > n_k || (causal && key_end - 1 > r0 + s_row + shift);
#pragma unroll
            for (int t = 0; t < S_MT; ++t) {
                if (mask)
                    attn_warp_mask<S_CH>(s[t], r0 + s_row + 16 * t, c0 + col0, n_k, shift,
                                         causal != 0, lane);
#pragma unroll
                for (int n = 0; n < S_CH / 8; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        s[t][n][e] = exp2f(fmaf(s[t][n][e], scale_log2, -lse2[t][e >> 1]));
            }
#if ATTN_DROPOUT
            bwd_dropped_to_smem<S_MT, S_CH>(p_s, s, keep, inv_keep, s_row, col0, CPR_P, lane);
#else
            bwd_frag_to_smem<S_MT, S_CH / 8>(p_s, s, 1.f, s_row, col0, CPR_P, lane);
#endif
            float dp[S_MT][S_CH / 8][4];
            attn_warp_qk_mt<S_MT, S_CH, DPAD>(dp, do_s, v_s + col0 * DPAD, s_row, lane);
#pragma unroll
            for (int t = 0; t < S_MT; ++t)
#pragma unroll
                for (int n = 0; n < S_CH / 8; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
#if ATTN_DROPOUT
                        // dP ∘ Z: the gradient reaches P only through the kept entries
                        const float dpz = keep[t].kept(n, e) ? dp[t][n][e] * inv_keep : 0.f;
#else
                        const float dpz = dp[t][n][e];
#endif
                        dp[t][n][e] = s[t][n][e] * (dpz - dlt[t][e >> 1]);
                    }
            bwd_frag_to_smem<S_MT, S_CH / 8>(ds_s, dp, 1.f, s_row, col0, CPR_P, lane);
        }
        __syncthreads();                           // P_ij and dS_ij are complete

        // -- dV_j += P_ijᵀ dO_i (P ∘ Z with dropout) ; dK_j += dS_ijᵀ Q_i --
        bwd_warp_tn<KV_MT, KV_DW, BLOCK_Q>(dv_acc, p_s, CPR_P, do_s, CPR, kv_row, kv_col, lane);
        bwd_warp_tn<KV_MT, KV_DW, BLOCK_Q>(dk_acc, ds_s, CPR_P, q_s, CPR, kv_row, kv_col, lane);
        __syncthreads();                           // every warp is done with Q_i and dO_i
        if (i + 1 < i_end) {
            attn_load_tile_async<BLOCK_Q, DPAD, NTHREADS>(q_s, q_h, r0 + BLOCK_Q, n_q, HEAD_DIM, tid);
            attn_load_tile_async<BLOCK_Q, DPAD, NTHREADS>(do_s, do_h, r0 + BLOCK_Q, n_q, HEAD_DIM, tid);
        }
        attn_cp_async_commit();

        // -- dQaccum_i += dS_ij K_j (fp32 atomics; the copies above run meanwhile) --
#pragma unroll
        for (int dc = 0; dc < Q_DW; dc += Q_CH) {
            float dq[Q_MT][Q_CH / 8][4];
            bwd_warp_nn<Q_MT, Q_CH, BLOCK_K>(dq, ds_s, CPR_P, k_s, CPR, q_row, q_col + dc, lane);
#pragma unroll
            for (int t = 0; t < Q_MT; ++t)
#pragma unroll
                for (int n = 0; n < Q_CH / 8; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int row = r0 + q_row + 16 * t + (lane >> 2) + 8 * (e >> 1);
                        const int col = q_col + dc + n * 8 + 2 * (lane & 3) + (e & 1);
                        if (row < n_q && col < HEAD_DIM)
                            atomicAdd(dq_h + (long long)row * HEAD_DIM + col, dq[t][n][e]);
                    }
        }
    }
    attn_cp_async_wait<0>();
    __syncthreads();                               // every warp is done with K_j and V_j

    // -- dK_j = scale · dK_j, dV_j -> HBM once, staged through the K_j, V_j tiles --
    bwd_frag_to_smem<KV_MT, KV_DW / 8>(k_s, dk_acc, scale, kv_row, kv_col, CPR, lane);
    bwd_frag_to_smem<KV_MT, KV_DW / 8>(v_s, dv_acc, 1.f, kv_row, kv_col, CPR, lane);
    __syncthreads();
    attn_store_tile<BLOCK_K, DPAD>(dk + bh * n_k * HEAD_DIM, k_s, c0, n_k, HEAD_DIM, tid, NTHREADS);
    attn_store_tile<BLOCK_K, DPAD>(dv + bh * n_k * HEAD_DIM, v_s, c0, n_k, HEAD_DIM, tid, NTHREADS);
}

// Arguments: dq_acc (B, H, n_q, d) fp32; dq (B, H, n_q, d) out; scale: softmax scale.
// Grid: (ceil(n_q / BLOCK_Q), B * H); block: PRE_THREADS.
extern "C" __global__ void __launch_bounds__(PRE_THREADS)
flash2_bwd_convert_dq(const float* __restrict__ dq_acc, attn_t* __restrict__ dq, int n_q,
                      float scale) {
    const int r0 = blockIdx.x * BLOCK_Q;
    const long long base = ((long long)blockIdx.y * n_q + r0) * HEAD_DIM;
    const int n = min(BLOCK_Q, n_q - r0) * HEAD_DIM;
    for (int idx = threadIdx.x; idx < n; idx += PRE_THREADS)
        dq[base + idx] = attn_from_f32(scale * dq_acc[base + idx]);
}
