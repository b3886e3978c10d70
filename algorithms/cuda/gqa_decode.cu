// gqa_decode.cu — split-KV decoding attention for MHA / GQA / MQA (flash-decoding), the port
// of algorithms/gqa.py in decode mode. GQA: Ainslie et al. 2023 (arXiv 2305.13245);
// split-KV: Dao et al., "Flash-Decoding for long-context inference" (2023).
//
// What it does: a few new query tokens (n_q, usually 1) of H query heads attend to a long
// key/value cache of n_k tokens and G = H / KV_GROUP kv heads; query head h reads kv head
// h / KV_GROUP. Two kernels:
//   gqa_decode_split    grid (n_splits, B·G·ceil(KV_GROUP·n_q / BLOCK_Q)): each CTA takes
//                       one kv head, one chunk of split_keys cache tokens, and all the query
//                       rows of that kv head's group (KV_GROUP·n_q rows, BLOCK_Q at a time) —
//                       so each K/V byte of the cache is read once per group, not once per
//                       query head. Inside the chunk it runs FlashAttention-2's loop (K_j,
//                       V_j tiles of BLOCK_K tokens through shared memory, online softmax in
//                       fp32 registers) and writes the chunk's normalized partial output
//                       O_s (fp32) and its log-sum-exp lse_s (fp32).
//   gqa_decode_combine  grid (n_q, B·H), HEAD_DIM threads rounded up to a warp: merges the
//                       n_splits partials of a row, O = Σ_s exp(lse_s − lse) O_s with
//                       lse = log Σ_s exp(lse_s); writes O (fp16) and lse (fp32).
// Causal (bottom-right aligned) applies to n_q > 1: query i sees cache tokens j <= i + n_k − n_q.
//
// Tile sizes (compile-time defines from the plan via algorithms/ports.py):
//   BLOCK_Q  = query rows per CTA (KV_GROUP·n_q rounded up to 16, at most 128), one warp per 16;
//   BLOCK_K  = cache tokens per K/V tile (the plan's block over the cache);
//   HEAD_DIM = d (a multiple of 8). The split length split_keys (a runtime argument, a multiple
//   of BLOCK_K) and n_splits come from the plan's number of splits.
// Shared memory of a split CTA: (BLOCK_Q + 2 BLOCK_K) x HEAD_DIM x 2 bytes.
// HBM traffic: K and V once per (group, row block) = once per group for decode; Q once;
// partials 4·(d + 1) bytes per (row, split) written, read back by the combine kernel; O once.
#include "attn_common.cuh"

#ifndef BLOCK_Q
#define BLOCK_Q 16
#endif
#ifndef BLOCK_K
#define BLOCK_K 64
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif

#define DPAD ATTN_PAD16(HEAD_DIM)
#define NWARPS (BLOCK_Q / 16)
#define NTHREADS (NWARPS * 32)
#define COMBINE_THREADS (((HEAD_DIM + 31) / 32) * 32)

static_assert(BLOCK_Q % 16 == 0 && BLOCK_Q <= 128, "BLOCK_Q must be a multiple of 16, <= 128");
static_assert(BLOCK_K % 16 == 0, "BLOCK_K must be a multiple of 16");
static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");

// Row r of a group's query rows is query token r % n_q of query head g·kv_group + r / n_q.
__device__ __forceinline__ long long group_row_offset(int b, int g, int r, int n_q, int heads,
                                                      int kv_group) {
    const int h = g * kv_group + r / n_q;
    return ((long long)(b * heads + h) * n_q + r % n_q);
}

// Arguments:
//   q (B, H, n_q, d), k and v (B, G, n_k, d): fp16. o_part (B·H, n_splits, n_q, d) and
//   lse_part (B·H, n_splits, n_q): fp32 partial results. split_keys: cache tokens per split.
extern "C" __global__ void __launch_bounds__(NTHREADS)
gqa_decode_split(const half* __restrict__ q, const half* __restrict__ k,
                 const half* __restrict__ v, float* __restrict__ o_part,
                 float* __restrict__ lse_part, int n_q, int n_k, int heads, int kv_group,
                 int split_keys, float scale, int causal) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    half* q_s = reinterpret_cast<half*>(smem_raw);           // group rows: BLOCK_Q x DPAD
    half* k_s = q_s + BLOCK_Q * DPAD;                          // K_j: BLOCK_K x DPAD
    half* v_s = k_s + BLOCK_K * DPAD;                          // V_j: BLOCK_K x DPAD
    constexpr int CPR = DPAD / 8;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int split = blockIdx.x, n_splits = gridDim.x;
    const int kv_heads = heads / kv_group;
    const int group_rows = kv_group * n_q;
    const int row_blocks = (group_rows + BLOCK_Q - 1) / BLOCK_Q;
    const int rb = blockIdx.y % row_blocks;
    const int bg = blockIdx.y / row_blocks;                    // b * G + g
    const int b = bg / kv_heads, g = bg % kv_heads;
    const int row0 = rb * BLOCK_Q;                             // first group row of the CTA
    const half* k_h = k + (long long)bg * n_k * HEAD_DIM;
    const half* v_h = v + (long long)bg * n_k * HEAD_DIM;

    const int shift = n_k - n_q;
    const int key_begin = split * split_keys;
    int key_end = min(n_k, key_begin + split_keys);
    if (causal) key_end = min(key_end, max(0, (n_q - 1) + shift + 1));  // last token's horizon
    const int n_blocks = key_end > key_begin ? (key_end - key_begin + BLOCK_K - 1) / BLOCK_K : 0;

    // -- Q rows of the group -> SRAM (gathered: each row is one (head, token)) --
    for (int idx = tid; idx < BLOCK_Q * CPR; idx += NTHREADS) {
        const int r = idx / CPR, ch = idx % CPR, gr = row0 + r;
        const bool ok = gr < group_rows && ch * 8 < HEAD_DIM;
        const half* src = ok ? q + group_row_offset(b, g, gr, n_q, heads, kv_group) * HEAD_DIM + ch * 8 : q;
        attn_cp_async16(q_s + attn_swizzle(r, ch, CPR), src, ok ? 16 : 0);
    }
    attn_cp_async_commit();
    if (n_blocks > 0) attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(k_s, k_h, key_begin, key_end, HEAD_DIM, tid);
    attn_cp_async_commit();
    if (n_blocks > 0) attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(v_s, v_h, key_begin, key_end, HEAD_DIM, tid);
    attn_cp_async_commit();

    float acc[DPAD / 8][4];
#pragma unroll
    for (int n = 0; n < DPAD / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    float m[2] = {ATTN_NEG_INF, ATTN_NEG_INF}, l[2] = {0.f, 0.f};
    const float scale_log2 = scale * ATTN_LOG2E;
    const int wrow = warp * 16;

    for (int j = 0; j < n_blocks; ++j) {
        const int c0 = key_begin + j * BLOCK_K;
        attn_cp_async_wait<1>();
        __syncthreads();
        float s[BLOCK_K / 8][4];
        attn_warp_qk<BLOCK_K, DPAD>(s, q_s, k_s, wrow, lane);  // S = Q Kᵀ for the group rows
        __syncthreads();
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(k_s, k_h, c0 + BLOCK_K, key_end, HEAD_DIM, tid);
        attn_cp_async_commit();
        if (causal || c0 + BLOCK_K > key_end) {
            // mask: keys past the split's end, and (causal) past the row's token horizon
#pragma unroll
            for (int n = 0; n < BLOCK_K / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = c0 + n * 8 + 2 * (lane & 3) + (e & 1);
                    const int gr = row0 + wrow + (lane >> 2) + (e >> 1) * 8;
                    if (key >= key_end || (causal && key > gr % n_q + shift))
                        s[n][e] = ATTN_NEG_INF;
                }
            }
        }
        attn_warp_softmax<BLOCK_K, DPAD>(s, acc, m, l, scale_log2);
        attn_cp_async_wait<1>();
        __syncthreads();
        attn_warp_pv<BLOCK_K, DPAD>(acc, s, v_s, lane);        // O += P V_j
        __syncthreads();
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(v_s, v_h, c0 + BLOCK_K, key_end, HEAD_DIM, tid);
        attn_cp_async_commit();
    }
    attn_cp_async_wait<0>();

    // -- partial results of this split: O_s = acc / l (fp32), lse_s = m + log l --
    attn_quad_sum(l);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int gr = row0 + wrow + (lane >> 2) + r * 8;
        if (gr >= group_rows) continue;
        const int h = g * kv_group + gr / n_q, i = gr % n_q;
        const long long prow = ((long long)(b * heads + h) * n_splits + split) * n_q + i;
        const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
        float* dst = o_part + prow * HEAD_DIM;
#pragma unroll
        for (int n = 0; n < DPAD / 8; ++n) {
            const int col = n * 8 + 2 * (lane & 3);
            if (col < HEAD_DIM)
                *reinterpret_cast<attn_f2*>(dst + col) =
                    attn_f2{acc[n][2 * r] * inv, acc[n][2 * r + 1] * inv};
        }
        if ((lane & 3) == 0)
            lse_part[prow] = l[r] > 0.f ? (m[r] + log2f(l[r])) * ATTN_LN2 : ATTN_NEG_INF;
    }
}

// Merge the splits of one (batch·head, query token) row. Grid (n_q, B·H).
extern "C" __global__ void __launch_bounds__(COMBINE_THREADS)
gqa_decode_combine(const float* __restrict__ o_part, const float* __restrict__ lse_part,
                   half* __restrict__ o, float* __restrict__ lse, int n_q, int n_splits) {
    const int i = blockIdx.x, bh = blockIdx.y, col = threadIdx.x;
    const long long base = (long long)bh * n_splits * n_q + i;   // split s at base + s·n_q
    float mx = ATTN_NEG_INF;
    for (int s = 0; s < n_splits; ++s) mx = fmaxf(mx, lse_part[base + (long long)s * n_q]);
    float total = 0.f, out = 0.f;
    if (mx != ATTN_NEG_INF) {
        for (int s = 0; s < n_splits; ++s) {
            const long long row = base + (long long)s * n_q;
            const float w = __expf(lse_part[row] - mx);             // 0 for empty splits
            total += w;
            if (col < HEAD_DIM) out += w * o_part[row * HEAD_DIM + col];
        }
    }
    const long long orow = (long long)bh * n_q + i;
    if (col < HEAD_DIM) o[orow * HEAD_DIM + col] = attn_f2h(total > 0.f ? out / total : 0.f);
    if (col == 0) lse[orow] = total > 0.f ? mx + __logf(total) : ATTN_NEG_INF;
}
