// block_sparse_fwd.cu — block-sparse FlashAttention forward, the port of
// algorithms/block_sparse.py and of the patterns expressed as block masks (local / sliding
// window, strided, Longformer, BigBird): Dao et al. 2022 (arXiv 2205.14135) §3.3,
// Proposition 4, run with FlashAttention-2's loop order (one CTA per Q row block).
//
// What it does: the flash2_fwd kernel (see flash2_fwd.cu) where each Q row block i visits
// only the K/V blocks listed for it in a block layout, given in CSR form:
//   block_ptr[L][T_r + 1]: offsets into block_idx (absolute), block_idx: the K/V block
//   numbers of row block i in increasing order, at block_idx[block_ptr[l][i] ..
//   block_ptr[l][i + 1]). L = 1 (one layout shared by every head, layout_per_head = 0) or
//   B·H (layout_per_head = 1).
// Tiles flagged in tile_partial[] (one byte per CSR entry) apply an element mask: a sliding
// window (window_left, window_right as in flash-attn, -1 = unbounded; causal is
// window_right = 0, bottom-right aligned like the causal mask) and, when elem_mask is not
// null, a boolean (N_q x N_k, shared by all heads) mask read from HBM for those tiles only —
// the patterns the simulator builds from indices (strided, BigBird's random blocks...). The
// simulator computes such masks on chip, so elem_mask reads are traffic it does not count. Blocks absent from the layout are never loaded,
// so the HBM traffic is Q and O once and K, V once per (row block, listed block) — the
// count Proposition 4 bounds by Θ(Nd + N²d²M⁻¹ s).
//
// Tile sizes (compile-time defines from the plan via algorithms/ports/): BLOCK_Q =
// block rows of the layout (B_r), BLOCK_K = block columns of the layout (B_c), HEAD_DIM = d;
// one warp per 16 query rows. Shared memory: (BLOCK_Q + 2 BLOCK_K) x HEAD_DIM x 2 bytes,
// as flash2. Grid: (T_r, B·H). Tensor cores: mma.sync m16n8k16 (fp16 or bf16 in, fp32 accumulate).
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_common.cuh"

#ifndef BLOCK_Q
#define BLOCK_Q 64
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

#define DPAD ATTN_PAD16(HEAD_DIM)

// Scores of keys the boolean element mask hides (or past n_k) -> -inf.
template <int BK>
__device__ __forceinline__ void warp_mask_elements(float (*s)[4], const unsigned char* elem_mask,
                                                   int q_row0, int key0, int n_q, int n_k,
                                                   int lane) {
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int key = key0 + n * 8 + 2 * (lane & 3) + (e & 1);
            const int row = q_row0 + (lane >> 2) + (e >> 1) * 8;
            if (key >= n_k || row >= n_q || !elem_mask[(long long)row * n_k + key])
                s[n][e] = ATTN_NEG_INF;
        }
    }
}
#define NWARPS (BLOCK_Q / 16)
#define NTHREADS (NWARPS * 32)

static_assert(BLOCK_Q % 16 == 0 && BLOCK_Q <= 256, "BLOCK_Q must be a multiple of 16, <= 256");
static_assert(BLOCK_K % 16 == 0, "BLOCK_K must be a multiple of 16");
static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");

// Arguments: as flash2_fwd, plus the CSR layout (block_ptr, block_idx, layout_per_head),
// the partial-tile flags (tile_partial, per CSR entry), the optional element mask and the
// element window (window_left, window_right).
extern "C" __global__ void __launch_bounds__(NTHREADS, MIN_CTAS_PER_SM)
block_sparse_fwd(const attn_t* __restrict__ q, const attn_t* __restrict__ k,
                 const attn_t* __restrict__ v, attn_t* __restrict__ o, float* __restrict__ lse,
                 const int* __restrict__ block_ptr, const int* __restrict__ block_idx,
                 const unsigned char* __restrict__ tile_partial,
                 const unsigned char* __restrict__ elem_mask, int layout_per_head, int n_q, int n_k, int heads, int kv_group, float scale,
                 int window_left, int window_right) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // Q_i: BLOCK_Q x DPAD
    attn_t* k_s = q_s + BLOCK_Q * DPAD;                          // K_j: BLOCK_K x DPAD
    attn_t* v_s = k_s + BLOCK_K * DPAD;                          // V_j: BLOCK_K x DPAD

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int t_r = gridDim.x, i = blockIdx.x;
    const int r0 = i * BLOCK_Q;
    const int bh = blockIdx.y;
    const int kv_bh = (bh / heads) * (heads / kv_group) + (bh % heads) / kv_group;
    const attn_t* q_h = q + (long long)bh * n_q * HEAD_DIM;
    const attn_t* k_h = k + (long long)kv_bh * n_k * HEAD_DIM;
    const attn_t* v_h = v + (long long)kv_bh * n_k * HEAD_DIM;
    const int* row_ptr = block_ptr + (layout_per_head ? bh : 0) * (t_r + 1) + i;
    const int first = row_ptr[0], n_blocks = row_ptr[1] - first;
    const int shift = n_k - n_q;

    // -- prologue: Q_i and the first listed K/V block -> SRAM (three commit groups) --
    attn_load_tile_async<BLOCK_Q, DPAD, NTHREADS>(q_s, q_h, r0, n_q, HEAD_DIM, tid);
    attn_cp_async_commit();
    int c_next = n_blocks > 0 ? block_idx[first] * BLOCK_K : 0;
    attn_load_kv_async<BLOCK_K, DPAD, NTHREADS>(k_s, v_s, k_h, v_h, c_next, n_k, HEAD_DIM, n_blocks, tid);

    float acc[DPAD / 8][4], m[2], l[2];
    attn_softmax_init<DPAD>(acc, m, l);
    const float scale_log2 = scale * ATTN_LOG2E;
    const int wrow = warp * 16;

    for (int j = 0; j < n_blocks; ++j) {
        const int c0 = c_next;
        c_next = j + 1 < n_blocks ? block_idx[first + j + 1] * BLOCK_K : 0;
        attn_cp_async_wait<1>();                               // Q_i and K_j have landed
        __syncthreads();
        float s[BLOCK_K / 8][4];
        attn_warp_qk<BLOCK_K, DPAD>(s, q_s, k_s, wrow, lane);  // S = Q_i K_jᵀ
        __syncthreads();
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(k_s, k_h, c_next, n_k, HEAD_DIM, tid);
        attn_cp_async_commit();
        if (tile_partial[first + j] || c0 + BLOCK_K > n_k) {
            attn_warp_mask_window<BLOCK_K>(s, r0 + wrow, c0, n_k, shift, window_left,
                                           window_right, lane);
            if (elem_mask != nullptr)
                warp_mask_elements<BLOCK_K>(s, elem_mask, r0 + wrow, c0, n_q, n_k, lane);
        }
        attn_warp_softmax<BLOCK_K, DPAD>(s, acc, m, l, scale_log2);
        attn_cp_async_wait<1>();                               // V_j has landed
        __syncthreads();
        attn_warp_pv<BLOCK_K, DPAD>(acc, s, v_s, lane);        // O_i += P V_j
        __syncthreads();
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(v_s, v_h, c_next, n_k, HEAD_DIM, tid);
        attn_cp_async_commit();
    }
    attn_cp_async_wait<0>();
    __syncthreads();

    // -- epilogue: O_i = acc / l, lse_i = m + log l (rows with no visible key: 0, -inf) --
    attn_quad_sum(l);
    attn_warp_o_to_smem<DPAD>(q_s, acc, l, wrow, lane);
    __syncwarp();
    attn_store_tile<16, DPAD>(o + (long long)bh * n_q * HEAD_DIM, q_s + wrow * DPAD, r0 + wrow,
                              n_q, HEAD_DIM, lane, 32);
    if ((lane & 3) == 0) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = r0 + wrow + (lane >> 2) + r * 8;
            if (row < n_q)
                lse[(long long)bh * n_q + row] =
                    l[r] > 0.f ? (m[r] + log2f(l[r])) * ATTN_LN2 : ATTN_NEG_INF;
        }
    }
}
