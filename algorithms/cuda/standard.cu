// standard.cu — standard (unfused) attention, the port of algorithms/standard/__init__.py.
//
// What it does: the textbook three-step attention of the FlashAttention paper's Algorithm 0,
// each step its own kernel with its result materialized in HBM:
//   standard_scores   S = scale · Q Kᵀ            tiled tensor-core GEMM, S written in fp16
//   standard_mask     S = where(mask, S, -inf) with a materialized boolean causal mask
//                     (bottom-right aligned: j <= i + N_k - N_q), in place; causal only
//   standard_softmax  P = softmax(S) row by row   one CTA per row; the row is staged in
//                     shared memory (N_k x 2 bytes), read once and P written once (fp16)
//   standard_pv       O = P V                     tiled tensor-core GEMM, O written in fp16
// S and P are (B·H, N_q, LD_S) fp16 with LD_S = N_k rounded up to a multiple of 8 (16-byte
// rows for cp.async); the padding columns of P are written as zeros so the P V GEMM needs no
// special case. That padding (< 8 columns) is the only traffic the simulator does not count.
// The softmax kernel can also apply the causal mask itself (argument `causal`, a fused
// variant); the port follows the simulator, which counts a separate mask kernel, so it
// launches standard_mask and passes causal = 0 to the softmax.
//
// Tile sizes (compile-time defines from algorithms/ports/):
//   TILE_M, TILE_N = output tile of a GEMM CTA (128 x 128 by default), TILE_K = depth of a
//   shared-memory stage (32). Four warps in a 2 x 2 layout, each a (TILE_M/2) x (TILE_N/2)
//   fp32 accumulator. Shared memory per GEMM CTA: 2 stages x (TILE_M + TILE_N) x TILE_K x 2 B.
//   HEAD_DIM = d (a multiple of 8) fixes the row stride of Q, K, V and O.
// Grid of a GEMM: (ceil(cols / TILE_N), ceil(rows / TILE_M), B·H); of the mask and softmax
// kernels: (N_q, B·H) — one CTA per row, as the simulator counts a row-wise pass.
// How it maps to the plan: the simulator's standard attention counts each of these launches
// and its HBM traffic (Q, K read; S written; S read, P written; P, V read; O written); the
// GEMM tiles only change how often a CTA re-reads Q/K/P/V tiles through L2, which the
// simulator's unfused model does not charge to HBM (operands of a GEMM are read once).
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_gemm.cuh"      // gemm_cta, TILE_M/N/K (includes attn_common.cuh)

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef SOFTMAX_THREADS
#define SOFTMAX_THREADS 256
#endif

static_assert(HEAD_DIM % 8 == 0, "HEAD_DIM must be a multiple of 8");

__device__ __forceinline__ int kv_index(int bh, int heads, int kv_group) {
    return (bh / heads) * (heads / kv_group) + (bh % heads) / kv_group;
}

// S = scale · Q Kᵀ. q (B·H, n_q, d), k (B·H/kv_group, n_k, d), s (B·H, n_q, ld_s).
// Grid (ceil(n_k / TILE_N), ceil(n_q / TILE_M), B·H), block GEMM_THREADS.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
standard_scores(const attn_t* __restrict__ q, const attn_t* __restrict__ k, attn_t* __restrict__ s,
                int n_q, int n_k, int ld_s, int heads, int kv_group, float scale) {
    const int bh = blockIdx.z;
    gemm_cta<true>(q + (long long)bh * n_q * HEAD_DIM, attn_dense_rows(n_q, HEAD_DIM),
                   k + (long long)kv_index(bh, heads, kv_group) * n_k * HEAD_DIM, HEAD_DIM,
                   s + (long long)bh * n_q * ld_s, attn_dense_rows(n_q, ld_s), n_q, n_k,
                   HEAD_DIM, scale);
}

// O = P V. p (B·H, n_q, ld_s) with zero padding columns, v (B·H/kv_group, n_k, d),
// o (B·H, n_q, d). Grid (ceil(d / TILE_N), ceil(n_q / TILE_M), B·H).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
standard_pv(const attn_t* __restrict__ p, const attn_t* __restrict__ v, attn_t* __restrict__ o,
            int n_q, int n_k, int ld_s, int heads, int kv_group) {
    const int bh = blockIdx.z;
    // K dimension = n_k: chunks reaching into the zero padding of P are harmless, V rows
    // past n_k are zero-filled
    gemm_cta<false>(p + (long long)bh * n_q * ld_s, attn_dense_rows(n_q, ld_s),
                    v + (long long)kv_index(bh, heads, kv_group) * n_k * HEAD_DIM, HEAD_DIM,
                    o + (long long)bh * n_q * HEAD_DIM, attn_dense_rows(n_q, HEAD_DIM), n_q,
                    HEAD_DIM, n_k, 1.f);
}

// Causal mask in place, as a framework's masked_fill with a materialized boolean mask:
// S[i, j] = allowed[i, j] ? S[i, j] : -inf. Every entry of the row of S is read and written
// and the row of the (N_q x N_k, one byte per entry, shared by all heads) mask is read —
// the traffic algorithms/standard/__init__.py counts for its ``mask`` kernel. Grid (N_q, B·H).
extern "C" __global__ void __launch_bounds__(SOFTMAX_THREADS)
standard_mask(attn_t* __restrict__ s, const unsigned char* __restrict__ allowed, int n_q, int n_k,
              int ld_s) {
    const int row = blockIdx.x;
    attn_t* srow = s + ((long long)blockIdx.y * n_q + row) * ld_s;
    const unsigned char* mrow = allowed + (long long)row * n_k;
    const attn_t neg_inf = attn_from_f32(ATTN_NEG_INF);
    for (int j = threadIdx.x; j < n_k; j += SOFTMAX_THREADS) {
        const attn_t x = srow[j];
        srow[j] = mrow[j] ? x : neg_inf;
    }
}

// Block-wide reduction of one float (max or sum) through shared memory.
template <bool IS_MAX>
__device__ __forceinline__ float block_reduce(float x, float* red) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float y = __shfl_xor_sync(0xffffffffu, x, off);
        x = IS_MAX ? fmaxf(x, y) : x + y;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();                                           // red[] free from a previous use
    if (lane == 0) red[warp] = x;
    __syncthreads();
    x = IS_MAX ? ATTN_NEG_INF : 0.f;
    for (int w = 0; w < SOFTMAX_THREADS / 32; ++w) x = IS_MAX ? fmaxf(x, red[w]) : x + red[w];
    return x;
}

// P = softmax(S) along each row, fp16 in and out; the row (n_k halves) is staged in dynamic
// shared memory so S is read from HBM once. causal = 1 also applies the mask (when the
// separate mask kernel is not launched). A fully masked row gives P = 0. Grid (n_q, B·H).
extern "C" __global__ void __launch_bounds__(SOFTMAX_THREADS)
standard_softmax(const attn_t* __restrict__ s, attn_t* __restrict__ p, int n_q, int n_k, int ld_s,
                 int causal) {
    extern __shared__ __align__(128) unsigned char softmax_raw[];
    attn_t* row_s = reinterpret_cast<attn_t*>(softmax_raw);           // n_k halves
    __shared__ float red[SOFTMAX_THREADS / 32];
    const int row = blockIdx.x;
    const long long off = ((long long)blockIdx.y * n_q + row) * ld_s;
    const int visible = causal ? max(0, min(n_k, row + n_k - n_q + 1)) : n_k;

    float mx = ATTN_NEG_INF;
    for (int j = threadIdx.x; j < n_k; j += SOFTMAX_THREADS) {  // S row: HBM -> SRAM, once
        const attn_t x = s[off + j];
        row_s[j] = x;
        if (j < visible) mx = fmaxf(mx, attn_to_f32(x));
    }
    mx = block_reduce<true>(mx, red);
    const float base = mx == ATTN_NEG_INF ? 0.f : mx;
    float sum = 0.f;
    for (int j = threadIdx.x; j < visible; j += SOFTMAX_THREADS)
        sum += __expf(attn_to_f32(row_s[j]) - base);
    sum = block_reduce<false>(sum, red);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int j = threadIdx.x; j < ld_s; j += SOFTMAX_THREADS) // P row: SRAM -> HBM, once
        p[off + j] = attn_from_f32(j < visible ? __expf(attn_to_f32(row_s[j]) - base) * inv : 0.f);
}
