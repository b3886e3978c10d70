// standard_bwd.cu — standard attention's backward as autograd runs it (Dao et al. 2022, arXiv
// 2205.14135, Appendix B.3, Algorithm 3), the port of algorithms/standard/backward.py.
//
// What it does: given Q, K, V, dO (B, H, N, d) and the forward's saved P (B·H, N_q, LD_S), the
// gradients of O = softmax(scale · Q Kᵀ [masked_fill causal]) V, one kernel per autograd op,
// every N_q x N_k intermediate in HBM, in the simulator's order:
//   standard_bwd_dv       dV = Pᵀ dO                tiled GEMM, A = P read transposed
//   standard_bwd_dp       dP = dO Vᵀ                tiled GEMM, written into `ds` (N_q x LD_S)
//   standard_bwd_softmax  dS = P ∘ (dP − rowsum(P ∘ dP)) in place of dP, one CTA per row: the
//                         rows of P and dP are staged in shared memory (read once), dS written
//                         once, its padding columns as zeros
//   standard_bwd_mask     causal only: the backward of masked_fill, dS[masked] = 0, in place,
//                         with the materialized (N_q x N_k, one byte per entry) causal mask
//   standard_bwd_dq       dQ = scale · dS K         tiled GEMM
//   standard_bwd_dk       dK = scale · dSᵀ Q        tiled GEMM, A = dS read transposed
// The transposed operands Pᵀ and dSᵀ are never materialized: the GEMM CTA (attn_gemm.cuh,
// A_TRANS) copies TILE_K rows of P (or dS) per stage and builds the A fragments with
// ldmatrix.trans. Causal masking is bottom-right aligned (key j visible to query i iff
// j <= i + N_k − N_q); a row that sees no key has P = 0, hence dS = 0 and dQ = 0.
// Dropout (--dropout p, training): the framework dropout of the forward, between softmax and
// P V, and its backward, with the simulator's keep mask bit for bit (algorithms/kernels/dropout.py:
// entry (b·H + h, i, j) is kept iff the top 24 bits of splitmix64(((b·H + h) N_q + i) N_k + j
// ^ splitmix64(seed)) are >= threshold = round(p 2²⁴); Z = kept / (1 − p)):
//   standard_dropout      forward: P ∘ Z and the bool mask (one byte per entry), one CTA per row
//   standard_bwd_dropout  dP = dP̃ ∘ mask / (1 − p) in place, before the softmax backward
// dV then reads P ∘ Z, the softmax backward the undropped P (as autograd). The seed travels as
// a 2 x int32 const tensor (8 bytes per CTA that the simulator does not count).
//
// Tile sizes (compile-time defines from the simulator's plan via algorithms/ports/):
//   TILE_M, TILE_N, TILE_K = plan.gemm_tile_m/n/k, the GEMM tiles the simulator counts for the
//   four products (dv_gemm, dp_gemm, dq_gemm, dk_gemm); four warps in a 2 x 2 layout of
//   m16n8k16 MMAs, 2 x (TILE_M + TILE_N) x TILE_K x 2 bytes of shared memory;
//   HEAD_DIM = d (a multiple of 8): the row stride of Q, K, V, dO, dQ, dK, dV.
// Grids: a GEMM (m x n output) (ceil(n / TILE_N), ceil(m / TILE_M), B·H), the CTAs the
// simulator counts (gemm_ctas per head); the softmax and mask kernels (N_q, B·H), one CTA per
// row, as the simulator's row kernels. The softmax backward's shared memory is the plan's
// row pair (plan.bwd.softmax_bwd_chunk = N_k elements of P and of dP); the port refuses the
// simulator's two-pass variant (rows that do not fit).
// HBM traffic against the simulator's count: the same kernels and bytes (GEMM operands
// through the CTAs' panels, P, dP/dS and the mask by rows), except that S-shaped matrices are
// stored with rows of LD_S = N_k rounded up to 8 (16-byte rows for cp.async): the padding
// (< 8 columns) is read by the GEMMs' last chunk and written by the softmax kernel (zeros).
// Numerics: MMAs in fp16/bf16 with fp32 accumulation; dP, dS round to the storage type in
// HBM (the simulator keeps them in fp32), the row sums are fp32.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (attn_common.cuh's attn_t).
#include "attn_gemm.cuh"      // gemm_cta (A_TRANS for Pᵀ, dSᵀ), TILE_M/N/K
#include "attn_dropout.cuh"   // the simulator's keep mask

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#define ROW_THREADS 256       // softmax / mask backward: algorithms/standard/backward.py ROW_THREADS

static_assert(HEAD_DIM % 8 == 0, "HEAD_DIM must be a multiple of 8");

// Per-head base pointers: q, k, v, dO, dQ, dK, dV are (B·H, n, HEAD_DIM); P and dS
// (B·H, n_q, ld_s). Multi-head only (the simulator has no GQA backward).
__device__ __forceinline__ long long head_rows(int n) { return (long long)blockIdx.z * n * HEAD_DIM; }

// dV = Pᵀ dO: (n_k x d) = (n_q x n_k)ᵀ (n_q x d). Grid (ceil(d / TILE_N), ceil(n_k / TILE_M), B·H).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
standard_bwd_dv(const attn_t* __restrict__ p, const attn_t* __restrict__ dout,
                attn_t* __restrict__ dv, int n_q, int n_k, int ld_s) {
    gemm_cta<false, true>(p + (long long)blockIdx.z * n_q * ld_s, attn_dense_rows(n_q, ld_s),
                          dout + head_rows(n_q), HEAD_DIM, dv + head_rows(n_k),
                          attn_dense_rows(n_k, HEAD_DIM), n_k, HEAD_DIM, n_q, 1.f);
}

// dP = dO Vᵀ: (n_q x n_k), stored in ds. Grid (ceil(n_k / TILE_N), ceil(n_q / TILE_M), B·H).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
standard_bwd_dp(const attn_t* __restrict__ dout, const attn_t* __restrict__ v,
                attn_t* __restrict__ ds, int n_q, int n_k, int ld_s) {
    gemm_cta<true>(dout + head_rows(n_q), attn_dense_rows(n_q, HEAD_DIM), v + head_rows(n_k),
                   HEAD_DIM, ds + (long long)blockIdx.z * n_q * ld_s, attn_dense_rows(n_q, ld_s),
                   n_q, n_k, HEAD_DIM, 1.f);
}

// dQ = scale · dS K: (n_q x d). dS's padding columns are zero, K's rows past n_k zero-filled.
// Grid (ceil(d / TILE_N), ceil(n_q / TILE_M), B·H).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
standard_bwd_dq(const attn_t* __restrict__ ds, const attn_t* __restrict__ k,
                attn_t* __restrict__ dq, int n_q, int n_k, int ld_s, float scale) {
    gemm_cta<false>(ds + (long long)blockIdx.z * n_q * ld_s, attn_dense_rows(n_q, ld_s),
                    k + head_rows(n_k), HEAD_DIM, dq + head_rows(n_q),
                    attn_dense_rows(n_q, HEAD_DIM), n_q, HEAD_DIM, n_k, scale);
}

// dK = scale · dSᵀ Q: (n_k x d). Grid (ceil(d / TILE_N), ceil(n_k / TILE_M), B·H).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
standard_bwd_dk(const attn_t* __restrict__ ds, const attn_t* __restrict__ q,
                attn_t* __restrict__ dk, int n_q, int n_k, int ld_s, float scale) {
    gemm_cta<false, true>(ds + (long long)blockIdx.z * n_q * ld_s, attn_dense_rows(n_q, ld_s),
                          q + head_rows(n_q), HEAD_DIM, dk + head_rows(n_k),
                          attn_dense_rows(n_k, HEAD_DIM), n_k, HEAD_DIM, n_q, scale);
}

// Sum of one float over the CTA (ROW_THREADS threads), through shared memory `red`.
__device__ __forceinline__ float row_sum(float x, float* red) {
    x = attn_warp_sum(x);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) attn_st_shared_f32(red + warp, x);
    __syncthreads();                                           // every warp's partial sum stored
    float total = 0.f;
    for (int w = 0; w < ROW_THREADS / 32; ++w) total += attn_ld_shared_f32(red + w);
    return total;
}

// dS = P ∘ (dP − rowsum(P ∘ dP)), in place of dP (ds), one row per CTA: the P and dP rows
// (n_k elements each) are staged in dynamic shared memory so each is read from HBM once; the
// whole dS row (ld_s columns, padding as zeros) is written once. Grid (n_q, B·H).
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
standard_bwd_softmax(const attn_t* __restrict__ p, attn_t* __restrict__ ds, int n_q, int n_k,
                     int ld_s) {
    attn_t* p_row = reinterpret_cast<attn_t*>(smem_raw);          // n_k elements of P
    attn_t* dp_row = p_row + n_k;                                 // n_k elements of dP
    __shared__ float red[ROW_THREADS / 32];
    const long long off = ((long long)blockIdx.y * n_q + blockIdx.x) * ld_s;
    float dot = 0.f;
    for (int j = threadIdx.x; j < n_k; j += ROW_THREADS) {     // the rows: HBM -> SRAM, once
        const attn_t pj = p[off + j], dpj = ds[off + j];
        p_row[j] = pj;
        dp_row[j] = dpj;
        dot = fmaf(attn_to_f32(pj), attn_to_f32(dpj), dot);
    }
    const float d_row = row_sum(dot, red);
    // each thread reads back only the entries it staged itself: no barrier needed before
    for (int j = threadIdx.x; j < ld_s; j += ROW_THREADS)      // dS row: SRAM -> HBM, once
        ds[off + j] = attn_from_f32(j < n_k ? attn_to_f32(p_row[j]) *
                                                  (attn_to_f32(dp_row[j]) - d_row) : 0.f);
}

// The backward of masked_fill(S, ~allowed, -inf): dS[i, j] = allowed[i, j] ? dS[i, j] : 0, in
// place. Every entry of the dS row is read and written and the mask row read, as the
// simulator's mask_bwd counts. Grid (N_q, B·H).
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
standard_bwd_mask(attn_t* __restrict__ ds, const unsigned char* __restrict__ allowed, int n_q,
                  int n_k, int ld_s) {
    const int row = blockIdx.x;
    attn_t* ds_row = ds + ((long long)blockIdx.y * n_q + row) * ld_s;
    const unsigned char* mask_row = allowed + (long long)row * n_k;
    const attn_t zero = attn_from_f32(0.f);
    for (int j = threadIdx.x; j < n_k; j += ROW_THREADS) {
        const attn_t x = ds_row[j];
        ds_row[j] = mask_row[j] ? x : zero;
    }
}

// ---- dropout: the simulator's keep mask (attn_dropout.cuh) ----------------------------------

// Forward dropout on P: p_drop = P ∘ Z (ld_s columns, padding zeros for the P V GEMM) and the
// bool keep mask (n_k bytes a row), one row per CTA: reads the row of P once and writes both
// rows once, as the simulator's ``dropout`` kernel. Grid (N_q, B·H).
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
standard_dropout(const attn_t* __restrict__ p, attn_t* __restrict__ p_drop,
                 unsigned char* __restrict__ mask, const int* __restrict__ seed, int n_q,
                 int n_k, int ld_s, int threshold, float inv_keep) {
    const long long row = (long long)blockIdx.y * n_q + blockIdx.x;    // (b·H + h) N_q + i
    const unsigned long long seed_mix = attn_dropout_seed_mix(seed);
    for (int j = threadIdx.x; j < ld_s; j += ROW_THREADS) {
        float x = 0.f;
        if (j < n_k) {
            const bool keep = attn_dropout_keeps(seed_mix, row * n_k + j, threshold);
            mask[row * n_k + j] = keep ? 1 : 0;
            x = keep ? attn_to_f32(p[row * ld_s + j]) * inv_keep : 0.f;
        }
        p_drop[row * ld_s + j] = attn_from_f32(x);
    }
}

// Backward of dropout: dP = dP̃ ∘ mask / (1 − p), in place of dP̃ (ds), one row per CTA: reads
// the dP̃ and mask rows, writes dP, as the simulator's ``dropout_bwd``. Grid (N_q, B·H).
extern "C" __global__ void __launch_bounds__(ROW_THREADS)
standard_bwd_dropout(attn_t* __restrict__ ds, const unsigned char* __restrict__ mask, int n_q,
                     int n_k, int ld_s, float inv_keep) {
    const long long row = (long long)blockIdx.y * n_q + blockIdx.x;
    for (int j = threadIdx.x; j < n_k; j += ROW_THREADS) {
        const float x = attn_to_f32(ds[row * ld_s + j]);
        ds[row * ld_s + j] = attn_from_f32(mask[row * n_k + j] ? x * inv_keep : 0.f);
    }
}
