// nsa_fwd.cu — Native Sparse Attention forward, the port of algorithms/nsa.py (kernels of
// algorithms/kernels/nsa_kernels.py): Yuan et al. (DeepSeek) 2025, "Native Sparse Attention:
// Hardware-Aligned and Natively Trainable Sparse Attention", arXiv 2502.11089, §3.3–3.4.
//
// What it does: each query attends three small key sets — compressed block summaries, the
// raw tokens of the n blocks those summaries rank highest, a sliding window — mixed by
// sigmoid gates. Four launches per forward, the simulator's four kernels; three are here:
//   nsa_compress  grid (⌈N_c / B_t⌉, B·G). K̃_i = w_kᵀ K[i d_s : i d_s + l] + b_k, Ṽ_i likewise
//                 (the module's fixed linear φ; b = wᵀE is its position term). A CTA loads the
//                 span of (B_t − 1) d_s + l tokens its B_t compressed tokens cover, once, and
//                 runs φ as a banded MMA: K̃ (16 tokens × d) = W (16 × span chunk) · K_span,
//                 W[t][u] = w[u − t d_s] inside the band, 0 outside (see "differences").
//   nsa_cmp       grid (T_r = ⌈N_q / B_r⌉, B·G): one CTA per KV head and B_r positions holding
//                 the g heads' rows (packed: row r is head r / B_r, position r % B_r; one warp
//                 per 16). Gates g_c = sigmoid(q · W_c) (an MMA against the group's gate
//                 rows); pass 1: FlashAttention-2 over the compressed tokens complete before
//                 each query (Eq. 7–8) -> O_cmp (storage type), lse; pass 2: S again,
//                 p_cmp = exp(S − lse), summed over the g heads and credited to selection
//                 blocks (Eqs. 9–10) in an on-chip ring of score bins (shared-memory float
//                 atomics); a block whose credits are complete is inserted into the
//                 position's n on-chip top-n slots (Eq. 11: blocks 0, j_t − 1, j_t forced,
//                 ties to the lower index); written ascending as int32, −1 padded.
//   (nsa_win_fwd  the window branch: block_sparse_fwd.cu over algorithms.local's causal band,
//                 launched by algorithms/ports/nsa.py with the element window on chip.)
//   nsa_slc       grid (N_q, B·G): one CTA per position and KV head holding its g heads'
//                 query rows (group-centric loading, Figure 3); the n_t selected blocks of
//                 raw K/V streamed in B_s-key sub-blocks (cp.async), online softmax, then
//                 o = g_cmp O_cmp + g_slc O_slc + g_win O_win in fp32, one store.
//
// Tile sizes and parameters (compile-time defines from the plan via algorithms/ports/nsa.py):
//   HEAD_DIM = d;  COMPRESS_TILE = plan.compress_tile (B_t);  CBLOCK = l, CSTRIDE = d_s;
//   GROUP = plan.group (g);  BLOCK_Q = plan.cmp_block_q (B_r);  BLOCK_K = plan.cmp_block_k
//   (B_c, compressed tokens per tile);  SBLOCK = l';  N_SEL = n;  SELECT_TILE = plan.select_tile
//   (B_s, keys per sub-block).
// Shared memory, as the plan's buffers: nsa_compress K_span, V_span (span rounded up to 16
// rows: the MMA k-step) and w, b in fp32; nsa_cmp Q_i (g·B_r rows rounded to 16), K̃_j, Ṽ_j,
// the 3g gate rows (rounded to 16), block_scores (B_r × BINS fp32, BINS = the plan's
// ⌈((B_c − 1) d_s + l) / l'⌉ + 1) and top_n (B_r × n × (fp32 + int32)); nsa_slc q_t (g rows
// rounded to 16), K_s, V_s, idx.
// HBM traffic vs the simulator's count: the same tensors, tiles and passes. Differences: the
// compress CTA reads w, b once (as counted) but its φ MMA multiplies the whole band chunk
// (~(15 d_s + l)/l times the counted 2 l d FLOPs per token — the kernel is memory-bound);
// nsa_cmp's gate MMA multiplies every row by 16–32 gate columns (all 3g of the group when
// g <= 10, else the 16-column chunks holding the warp's heads) where 3 are counted;
// nsa_slc runs pad16(g)/16 warps (the plan's occupancy assumes 128 threads).
// Numerics: w, b, W_c, K̃, Ṽ, O_cmp and O_win are rounded to the storage type (the simulator
// keeps fp32 on chip); softmax, scores, gates and the gated sum are fp32. The importance
// scores are summed by shared-memory atomics, whose order varies: the scores (not the
// outputs' tolerance) can differ in the last fp32 bits from run to run, and a top-n choice
// between two blocks whose scores tie to that precision can differ (docs/gpu.md, "nsa").
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_common.cuh"

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef COMPRESS_TILE
#define COMPRESS_TILE 16
#endif
#ifndef CBLOCK
#define CBLOCK 32
#endif
#ifndef CSTRIDE
#define CSTRIDE 16
#endif
#ifndef GROUP
#define GROUP 16
#endif
#ifndef BLOCK_Q
#define BLOCK_Q 8
#endif
#ifndef BLOCK_K
#define BLOCK_K 128
#endif
#ifndef SBLOCK
#define SBLOCK 64
#endif
#ifndef N_SEL
#define N_SEL 16
#endif
#ifndef SELECT_TILE
#define SELECT_TILE 64
#endif

#define DPAD ATTN_PAD16(HEAD_DIM)
#define CPR (DPAD / 8)
#define PAD16(x) ((((x) + 15) / 16) * 16)

// Eq. 9 in stride segments: a compressed token spans SEG_C segments, a selection block SEG_S.
#define SEG_C (CBLOCK / CSTRIDE)
#define SEG_S (SBLOCK / CSTRIDE)
// Selection blocks one tile of B_c compressed tokens credits (the plan's block_scores width):
// a ring of score bins per position, indexed by block % BINS.
#define BINS ((BLOCK_K + SEG_C - 2) / SEG_S + 2)

static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");
static_assert(CBLOCK % CSTRIDE == 0 && SBLOCK % CSTRIDE == 0, "d_s must divide l and l'");
static_assert(BLOCK_K % 16 == 0 && SELECT_TILE % 16 == 0, "B_c, B_s: multiples of 16 (MMA)");
static_assert(SBLOCK % SELECT_TILE == 0, "B_s must divide l'");
static_assert(N_SEL >= 3, "n >= 3: the initial and two local blocks are forced");

// Compressed tokens a query at key position kpos sees (Eq. 7: whole blocks up to kpos).
__device__ __forceinline__ int nsa_visible(int kpos) {
    return kpos + 1 < CBLOCK ? 0 : (kpos + 1 - CBLOCK) / CSTRIDE + 1;
}

// ==== kernel 1: compression φ =================================================================

#define SPAN ((COMPRESS_TILE - 1) * CSTRIDE + CBLOCK)
#define SPAN_PAD PAD16(SPAN)
#define COMPRESS_THREADS 128
#define COMPRESS_ROW_TILES ((COMPRESS_TILE + 15) / 16)

// out (16 tokens × d, C fragments) = W · span for the warp's tokens t0 .. t0 + 15 (relative to
// the CTA's first token): W[t][u] = w[u − t d_s] for 0 <= u − t d_s < l. Only the span chunks
// of 16 rows that the band touches are multiplied.
__device__ __forceinline__ void nsa_compress_tile(float (*acc)[4], const attn_t* span_s,
                                                  const float* w_s, int t0, int lane) {
#pragma unroll
    for (int n = 0; n < DPAD / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    const int lo = t0 * CSTRIDE, hi = min(SPAN_PAD, (t0 + 15) * CSTRIDE + CBLOCK);
    const int g = lane >> 2, t = lane & 3;
    for (int kk = lo / 16; kk * 16 < hi; ++kk) {
        // A = W: (token g, rows 2t, 2t+1), (g + 8, ..), (g, 2t + 8, ..), (g + 8, 2t + 8, ..)
        float wv[2][2][2];
#pragma unroll
        for (int rr = 0; rr < 2; ++rr)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int u = kk * 16 + hh * 8 + 2 * t + e - (t0 + g + 8 * rr) * CSTRIDE;
                    wv[rr][hh][e] = (u >= 0 && u < CBLOCK) ? w_s[u] : 0.f;
                }
        unsigned a[4];
        a[0] = attn_pack2(wv[0][0][0], wv[0][0][1]);
        a[1] = attn_pack2(wv[1][0][0], wv[1][0][1]);
        a[2] = attn_pack2(wv[0][1][0], wv[0][1][1]);
        a[3] = attn_pack2(wv[1][1][0], wv[1][1][1]);
#pragma unroll
        for (int n = 0; n < DPAD / 16; ++n) {
            unsigned b[4];
            // B = span rows kk*16 .. +15 (as V in P V: ldmatrix.trans)
            const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            attn_ldmatrix_x4_trans(b, span_s + attn_swizzle(row, n * 2 + (lane >> 4), CPR));
            attn_mma16816(acc[2 * n], a, b[0], b[1]);
            attn_mma16816(acc[2 * n + 1], a, b[2], b[3]);
        }
    }
}

// (acc + bias) -> rows [i_base + t0, ..) of the compressed tensor, tokens < m of the CTA.
__device__ __forceinline__ void nsa_compress_store(attn_t* dst, float (*acc)[4], const float* b_s,
                                                   int t0, int m, int lane) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
        const int tok = t0 + (lane >> 2) + 8 * rr;
        if (tok >= m) continue;
#pragma unroll
        for (int n = 0; n < DPAD / 8; ++n) {
            const int col = n * 8 + 2 * (lane & 3);
            if (col < HEAD_DIM)
                *reinterpret_cast<unsigned*>(dst + (long long)tok * HEAD_DIM + col) =
                    attn_pack2(acc[n][2 * rr] + b_s[col], acc[n][2 * rr + 1] + b_s[col + 1]);
        }
    }
}

// Arguments: k, v (B, G, n_k, d); w_k, w_v (l,), b_k, b_v (d,) storage type; kc, vc
// (B, G, n_c, d) storage type; n_k, n_c = N_c.
extern "C" __global__ void __launch_bounds__(COMPRESS_THREADS)
nsa_compress(const attn_t* __restrict__ k, const attn_t* __restrict__ v,
             const attn_t* __restrict__ w_k, const attn_t* __restrict__ w_v,
             const attn_t* __restrict__ b_k, const attn_t* __restrict__ b_v,
             attn_t* __restrict__ kc, attn_t* __restrict__ vc, int n_k, int n_c) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* ks = reinterpret_cast<attn_t*>(smem_raw);            // K span: SPAN_PAD x DPAD
    attn_t* vs = ks + SPAN_PAD * DPAD;                           // V span
    float* wk_s = reinterpret_cast<float*>(vs + SPAN_PAD * DPAD);  // w_k, w_v (l), b_k, b_v (d)
    float* wv_s = wk_s + CBLOCK;
    float* bk_s = wv_s + CBLOCK;
    float* bv_s = bk_s + DPAD;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int i_base = blockIdx.x * COMPRESS_TILE;               // first compressed token
    const int m = min(COMPRESS_TILE, n_c - i_base);              // tokens of this CTA
    const long long bh = blockIdx.y;
    const int t0 = i_base * CSTRIDE, t1 = (i_base + m - 1) * CSTRIDE + CBLOCK;

    // -- the span of raw K and V (two commit groups) and φ's weights -> SRAM --
    attn_load_tile_async<SPAN_PAD, DPAD, COMPRESS_THREADS>(ks, k + bh * n_k * HEAD_DIM, t0, t1,
                                                           HEAD_DIM, tid);
    attn_cp_async_commit();
    attn_load_tile_async<SPAN_PAD, DPAD, COMPRESS_THREADS>(vs, v + bh * n_k * HEAD_DIM, t0, t1,
                                                           HEAD_DIM, tid);
    attn_cp_async_commit();
    for (int x = tid; x < CBLOCK; x += COMPRESS_THREADS) {
        attn_st_shared_f32(wk_s + x, attn_to_f32(w_k[x]));
        attn_st_shared_f32(wv_s + x, attn_to_f32(w_v[x]));
    }
    for (int x = tid; x < HEAD_DIM; x += COMPRESS_THREADS) {
        attn_st_shared_f32(bk_s + x, attn_to_f32(b_k[x]));
        attn_st_shared_f32(bv_s + x, attn_to_f32(b_v[x]));
    }
    float acc[DPAD / 8][4];
    attn_cp_async_wait<1>();                                     // the K span has landed
    __syncthreads();
    for (int rt = warp; rt < COMPRESS_ROW_TILES; rt += COMPRESS_THREADS / 32) {
        if (rt * 16 >= m) break;
        nsa_compress_tile(acc, ks, wk_s, rt * 16, lane);         // K̃ = w_kᵀ K_block
        nsa_compress_store(kc + (bh * n_c + i_base) * HEAD_DIM, acc, bk_s, rt * 16, m, lane);
    }
    attn_cp_async_wait<0>();                                     // the V span has landed
    __syncthreads();
    for (int rt = warp; rt < COMPRESS_ROW_TILES; rt += COMPRESS_THREADS / 32) {
        if (rt * 16 >= m) break;
        nsa_compress_tile(acc, vs, wv_s, rt * 16, lane);         // Ṽ = w_vᵀ V_block
        nsa_compress_store(vc + (bh * n_c + i_base) * HEAD_DIM, acc, bv_s, rt * 16, m, lane);
    }
}

// ==== kernel 2: compressed attention, gates, importance scores, top-n ==========================

#define ROWS_PAD PAD16(GROUP * BLOCK_Q)
#define CMP_WARPS (ROWS_PAD / 16)
#define CMP_THREADS (CMP_WARPS * 32)
#define WG_ROWS PAD16(3 * GROUP)

static_assert(ROWS_PAD <= 512, "GROUP * BLOCK_Q must be <= 512 (32 warps)");

// Insert block `blk` with score `sc` into a position's top-n slots (score descending; a later,
// higher-indexed block enters only with a strictly higher score: ties go to the lower index).
__device__ __forceinline__ void nsa_topn_insert(float* score, int* index, int& count, float sc,
                                                int blk) {
    int pos;
    if (count < N_SEL) {
        pos = count++;
    } else {
        if (!(sc > score[N_SEL - 1])) return;
        pos = N_SEL - 1;
    }
    while (pos > 0 && score[pos - 1] < sc) {
        score[pos] = score[pos - 1];
        index[pos] = index[pos - 1];
        --pos;
    }
    score[pos] = sc;
    index[pos] = blk;
}

// Finalize blocks [b_lo, b_hi) of one position (they receive no more credit): insert those
// up to j_t (blocks 0, j_t − 1, j_t forced with +inf) and clear their ring bins.
__device__ __forceinline__ void nsa_finalize(float* bins_row, float* score, int* index,
                                             int& count, int b_lo, int b_hi, int jt) {
    for (int blk = b_lo; blk < b_hi; ++blk) {
        float* bin = bins_row + blk % BINS;
        if (blk <= jt) {
            const bool forced = blk == 0 || blk == jt || blk == jt - 1;
            nsa_topn_insert(score, index, count,
                            forced ? __int_as_float(0x7f800000) : attn_ld_shared_f32(bin), blk);
        }
        attn_st_shared_f32(bin, 0.f);
    }
}

// Gates of the warp's rows from gate columns [col0, col0 + kCols) (gate row c = 3 h + branch
// of the group's head h): sigmoid(q · W_c), written for the columns of each row's own head.
template <int kCols>
__device__ __forceinline__ void nsa_gate_chunk(float* gates, const attn_t* q_s, const attn_t* wg_s,
                                               int col0, int wrow, int lane, const bool* row_ok,
                                               const int* row_head, const int* row_pos,
                                               int head0, int n_q) {
    float sg[kCols / 8][4];
    attn_warp_qk<kCols, DPAD>(sg, q_s, wg_s, wrow, lane);
#pragma unroll
    for (int n = 0; n < kCols / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int col = col0 + n * 8 + 2 * (lane & 3) + (e & 1), hr = e >> 1;
            if (row_ok[hr] && col / 3 == row_head[hr]) {
                const long long qrow = (long long)(head0 + row_head[hr]) * n_q + row_pos[hr];
                gates[qrow * 3 + col % 3] = 1.f / (1.f + __expf(-sg[n][e]));
            }
        }
}

// Arguments: q (B, H, n_q, d); kc, vc (B, G, n_c, d); w_gate (H, 3, d) storage type;
// o_cmp (B, H, n_q, d) storage type; gates (B, H, n_q, 3) fp32; sel (B, G, n_q, n) int32.
extern "C" __global__ void __launch_bounds__(CMP_THREADS)
nsa_cmp(const attn_t* __restrict__ q, const attn_t* __restrict__ kc,
        const attn_t* __restrict__ vc, const attn_t* __restrict__ w_gate,
        attn_t* __restrict__ o_cmp, float* __restrict__ gates, int* __restrict__ sel,
        int n_q, int n_k, int n_c, int heads, float scale) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // packed rows: ROWS_PAD x DPAD
    attn_t* k_s = q_s + ROWS_PAD * DPAD;                         // K̃_j: BLOCK_K x DPAD
    attn_t* v_s = k_s + BLOCK_K * DPAD;                          // Ṽ_j: BLOCK_K x DPAD
    attn_t* wg_s = v_s + BLOCK_K * DPAD;                         // gate rows: WG_ROWS x DPAD
    float* bins = reinterpret_cast<float*>(wg_s + WG_ROWS * DPAD);   // BLOCK_Q x BINS
    float* top_score = bins + BLOCK_Q * BINS;                    // BLOCK_Q x N_SEL
    int* top_index = reinterpret_cast<int*>(top_score + BLOCK_Q * N_SEL);

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wrow = warp * 16;
    const int rb = blockIdx.x, r0 = rb * BLOCK_Q, r1 = min(r0 + BLOCK_Q, n_q);
    const int kv_bh = blockIdx.y;                                // b · G + kv head
    const int kv_heads = heads / GROUP;
    const int b = kv_bh / kv_heads, h0 = (kv_bh % kv_heads) * GROUP;
    const int shift = n_k - n_q;
    const attn_t* kc_h = kc + (long long)kv_bh * n_c * HEAD_DIM;
    const attn_t* vc_h = vc + (long long)kv_bh * n_c * HEAD_DIM;
    const int nv_last = nsa_visible(r1 - 1 + shift);
    const int n_tiles = (nv_last + BLOCK_K - 1) / BLOCK_K;

    // -- prologue: packed Q rows and the group's gate rows; K̃_0; Ṽ_0 (three commit groups) --
    attn_load_packed_rows_async<ROWS_PAD, DPAD, CMP_THREADS, GROUP, BLOCK_Q>(q_s, q, b, heads, h0,
                                                                             n_q, r0, r1, HEAD_DIM, tid);
    attn_load_tile_async<WG_ROWS, DPAD, CMP_THREADS>(wg_s, w_gate + (long long)h0 * 3 * HEAD_DIM,
                                                     0, 3 * GROUP, HEAD_DIM, tid);
    attn_cp_async_commit();
    attn_load_kv_async<BLOCK_K, DPAD, CMP_THREADS>(k_s, v_s, kc_h, vc_h, 0, n_c, HEAD_DIM, n_tiles, tid);

    // the thread's two packed rows: head, position, compressed tokens visible
    int row_head[2], row_pos[2], row_nv[2];
    bool row_ok[2];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int r = wrow + (lane >> 2) + 8 * hr;
        row_head[hr] = r / BLOCK_Q;
        row_pos[hr] = r0 + r % BLOCK_Q;
        row_ok[hr] = row_head[hr] < GROUP && row_pos[hr] < r1;
        row_nv[hr] = nsa_visible(row_pos[hr] + shift);
    }

    // -- gates: g_c = sigmoid(q · W_c) for c in (cmp, slc, win), fp32 -> HBM --
    attn_cp_async_wait<2>();                                     // Q rows and gate rows landed
    __syncthreads();
    if (WG_ROWS <= 32) {                                       // g <= 10: every gate row at once
        nsa_gate_chunk<WG_ROWS>(gates, q_s, wg_s, 0, wrow, lane, row_ok, row_head, row_pos,
                                b * heads + h0, n_q);
    } else {
        // only 16-column chunks (starting at multiples of 8 rows, which keep the swizzle)
        // that hold the warp's own heads' 3 columns: 3g columns at once would cost 3g/2
        // registers a thread. B_r >= 8: at most 2 heads a warp, 6 columns, one chunk.
        const int col_lo = 3 * min(GROUP - 1, wrow / BLOCK_Q);
        const int col_hi = 3 * min(GROUP - 1, (wrow + 15) / BLOCK_Q) + 3;
        const int first = min(col_lo & ~7, WG_ROWS - 16);
        if (BLOCK_Q >= 8) {
            nsa_gate_chunk<16>(gates, q_s, wg_s + first * DPAD, first, wrow, lane, row_ok,
                               row_head, row_pos, b * heads + h0, n_q);
        } else {
            for (int c = first; c < col_hi; c += 16) {
                const int c0 = min(c, WG_ROWS - 16);
                nsa_gate_chunk<16>(gates, q_s, wg_s + c0 * DPAD, c0, wrow, lane, row_ok,
                                   row_head, row_pos, b * heads + h0, n_q);
            }
        }
    }

    // -- pass 1: FlashAttention-2 over the visible compressed tokens -> O_cmp, lse --
    float acc[DPAD / 8][4], m[2], l[2];
    attn_softmax_init<DPAD>(acc, m, l);
    const float scale_log2 = scale * ATTN_LOG2E;
    for (int j = 0; j < n_tiles; ++j) {
        const int c0 = j * BLOCK_K;
        attn_cp_async_wait<1>();                               // K̃_j has landed
        __syncthreads();
        float s[BLOCK_K / 8][4];
        attn_warp_qk<BLOCK_K, DPAD>(s, q_s, k_s, wrow, lane);  // S = Q K̃_jᵀ
        __syncthreads();                                       // every warp is done with K̃_j
        if (j + 1 < n_tiles)
            attn_load_tile_async<BLOCK_K, DPAD, CMP_THREADS>(k_s, kc_h, c0 + BLOCK_K, n_c, HEAD_DIM, tid);
        attn_cp_async_commit();
#pragma unroll
        for (int n = 0; n < BLOCK_K / 8; ++n)                  // Eq. 7: whole blocks only
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (c0 + n * 8 + 2 * (lane & 3) + (e & 1) >= row_nv[e >> 1]) s[n][e] = ATTN_NEG_INF;
        attn_warp_softmax<BLOCK_K, DPAD>(s, acc, m, l, scale_log2);
        attn_cp_async_wait<1>();                               // Ṽ_j has landed
        __syncthreads();
        attn_warp_pv<BLOCK_K, DPAD>(acc, s, v_s, lane);        // O += P Ṽ_j
        __syncthreads();                                       // every warp is done with Ṽ_j
        if (j + 1 < n_tiles)
            attn_load_tile_async<BLOCK_K, DPAD, CMP_THREADS>(v_s, vc_h, c0 + BLOCK_K, n_c, HEAD_DIM, tid);
        attn_cp_async_commit();
    }
    attn_cp_async_wait<0>();
    __syncthreads();                                           // K̃/Ṽ tiles free for pass 2
    if (n_tiles > 0) attn_load_tile_async<BLOCK_K, DPAD, CMP_THREADS>(k_s, kc_h, 0, n_c, HEAD_DIM, tid);
    attn_cp_async_commit();

    // O_cmp = acc / l -> HBM; lse in base-2 scaled units (+inf when nothing is visible: p = 0)
    attn_quad_sum(l);
    float lse2[2];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        lse2[hr] = l[hr] > 0.f ? m[hr] + log2f(l[hr]) : __int_as_float(0x7f800000);
        if (!row_ok[hr]) continue;
        const float inv = l[hr] > 0.f ? 1.f / l[hr] : 0.f;
        attn_t* dst = o_cmp + ((long long)(b * heads + h0 + row_head[hr]) * n_q + row_pos[hr]) * HEAD_DIM;
#pragma unroll
        for (int n = 0; n < DPAD / 8; ++n) {
            const int col = n * 8 + 2 * (lane & 3);
            if (col < HEAD_DIM)
                *reinterpret_cast<unsigned*>(dst + col) =
                    attn_pack2(acc[n][2 * hr] * inv, acc[n][2 * hr + 1] * inv);
        }
    }

    // -- pass 2: p_cmp = exp(S − lse), summed over the g heads (Eq. 10) into selection-block
    //    bins (Eq. 9: a compressed token counts once per stride segment it shares with a
    //    block); blocks complete after a tile enter the top-n slots (Eq. 11) --
    for (int x = tid; x < BLOCK_Q * BINS; x += CMP_THREADS) attn_st_shared_f32(bins + x, 0.f);
    __syncthreads();                                           // the bins are clear
    const int my_pos = r0 + tid;                               // thread tid < BLOCK_Q: position
    const int my_kpos = my_pos + shift;
    const bool my_row = tid < BLOCK_Q && my_pos < r1 && my_kpos >= 0;
    const int my_jt = my_kpos >= 0 ? my_kpos / SBLOCK : -1;
    float* my_bins = bins + tid * BINS;
    float* my_score = top_score + tid * N_SEL;
    int* my_index = top_index + tid * N_SEL;
    int my_count = 0;
    for (int j = 0; j < n_tiles; ++j) {
        const int c0 = j * BLOCK_K;
        attn_cp_async_wait<0>();                               // K̃_j has landed
        __syncthreads();                                       // (and the bins of tile j-1 are settled)
        float s[BLOCK_K / 8][4];
        attn_warp_qk<BLOCK_K, DPAD>(s, q_s, k_s, wrow, lane);  // S = Q K̃_jᵀ (again)
        __syncthreads();                                       // pass 2: every warp is done with K̃_j
        if (j + 1 < n_tiles)
            attn_load_tile_async<BLOCK_K, DPAD, CMP_THREADS>(k_s, kc_h, c0 + BLOCK_K, n_c, HEAD_DIM, tid);
        attn_cp_async_commit();
#pragma unroll
        for (int n = 0; n < BLOCK_K / 8; ++n) {
            const int col0 = c0 + n * 8;                       // the quad's 8 tokens
            float p[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int c = col0 + 2 * (lane & 3) + (e & 1), hr = e >> 1;
                p[e] = (row_ok[hr] && c < row_nv[hr]) ? exp2f(fmaf(s[n][e], scale_log2, -lse2[hr])) : 0.f;
            }
            // blocks the quad's tokens credit: segments [col0, col0 + 8 + SEG_C − 1)
            for (int blk = col0 / SEG_S; blk <= (col0 + 7 + SEG_C - 1) / SEG_S; ++blk) {
                float part[2] = {0.f, 0.f};
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int c = col0 + 2 * (lane & 3) + (e & 1);
                    const int seg = min(c + SEG_C, (blk + 1) * SEG_S) - max(c, blk * SEG_S);
                    if (seg > 0) part[e >> 1] += p[e] * (float)seg;
                }
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {               // the quad holds one row
                    part[hr] += __shfl_xor_sync(0xffffffffu, part[hr], 1);
                    part[hr] += __shfl_xor_sync(0xffffffffu, part[hr], 2);
                    if ((lane & 3) == 0 && part[hr] != 0.f)
                        atomicAdd(bins + (row_pos[hr] - r0) * BINS + blk % BINS, part[hr]);
                }
            }
        }
        __syncthreads();                                       // the tile's credits are in
        if (my_row)
            nsa_finalize(my_bins, my_score, my_index, my_count, c0 / SEG_S,
                         (c0 + BLOCK_K) / SEG_S, my_jt);
        else if (tid < BLOCK_Q)
            for (int blk = c0 / SEG_S; blk < (c0 + BLOCK_K) / SEG_S; ++blk)
                attn_st_shared_f32(my_bins + blk % BINS, 0.f);
    }
    attn_cp_async_wait<0>();
    if (tid < BLOCK_Q && my_pos < r1) {
        if (my_row) {
            // the blocks left: partly credited ones in the ring, then blocks no token credits
            const int f = n_tiles * BLOCK_K / SEG_S;
            nsa_finalize(my_bins, my_score, my_index, my_count, f, min(my_jt + 1, f + BINS), my_jt);
            for (int blk = f + BINS; blk <= my_jt; ++blk) {
                const bool forced = blk == my_jt || blk == my_jt - 1;
                nsa_topn_insert(my_score, my_index, my_count,
                                forced ? __int_as_float(0x7f800000) : 0.f, blk);
            }
            for (int a = 1; a < my_count; ++a) {               // ascending block order
                const int x = my_index[a];
                int c = a;
                while (c > 0 && my_index[c - 1] > x) { my_index[c] = my_index[c - 1]; --c; }
                my_index[c] = x;
            }
        }
        int* dst = sel + ((long long)kv_bh * n_q + my_pos) * N_SEL;
        for (int s = 0; s < N_SEL; ++s) dst[s] = s < my_count ? my_index[s] : -1;
    }
}

// ==== kernel 4: selected attention and the gated combination ==================================

#define SLC_ROWS PAD16(GROUP)
#define SLC_WARPS (SLC_ROWS / 16)
#define SLC_THREADS (SLC_WARPS * 32)

static_assert(SLC_ROWS <= 512, "GROUP must be <= 512");

// The sub-blocks of B_s keys a position visits: slot s's block idx[s], keys [idx[s] l',
// min(idx[s] l' + l', kend)) in steps of B_s.
struct nsa_sub { int slot, c0; };
__device__ __forceinline__ nsa_sub nsa_next_sub(nsa_sub it, const int* idx_s, int n_t, int kend) {
    const int b1 = min(idx_s[it.slot] * SBLOCK + SBLOCK, kend);
    if (it.c0 + SELECT_TILE < b1) return nsa_sub{it.slot, it.c0 + SELECT_TILE};
    if (it.slot + 1 < n_t) return nsa_sub{it.slot + 1, idx_s[it.slot + 1] * SBLOCK};
    return nsa_sub{n_t, 0};
}

// Arguments: q (B, H, n_q, d), k, v (B, G, n_k, d); sel (B, G, n_q, n) int32; gates
// (B, H, n_q, 3) fp32; o_cmp, o_win, o (B, H, n_q, d) storage type.
// (minimum 1 CTA per SM stated: without it ptxas spills 28 B at d = 128, B_s = 64 on sm_90)
extern "C" __global__ void __launch_bounds__(SLC_THREADS, 1)
nsa_slc(const attn_t* __restrict__ q, const attn_t* __restrict__ k, const attn_t* __restrict__ v,
        const int* __restrict__ sel, const float* __restrict__ gates,
        const attn_t* __restrict__ o_cmp, const attn_t* __restrict__ o_win, attn_t* __restrict__ o,
        int n_q, int n_k, int heads, float scale) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // q_t of g heads: SLC_ROWS x DPAD
    attn_t* k_s = q_s + SLC_ROWS * DPAD;                         // K_s: SELECT_TILE x DPAD
    attn_t* v_s = k_s + SELECT_TILE * DPAD;                      // V_s
    int* idx_s = reinterpret_cast<int*>(v_s + SELECT_TILE * DPAD);   // the n indices

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wrow = warp * 16;
    const int t = blockIdx.x, kv_bh = blockIdx.y;
    const int kv_heads = heads / GROUP;
    const int b = kv_bh / kv_heads, h0 = (kv_bh % kv_heads) * GROUP;
    const int kpos = t + n_k - n_q, kend = kpos + 1;             // keys [0, kend) visible
    const int n_t = kpos < 0 ? 0 : min(N_SEL, kpos / SBLOCK + 1);
    const attn_t* k_h = k + (long long)kv_bh * n_k * HEAD_DIM;
    const attn_t* v_h = v + (long long)kv_bh * n_k * HEAD_DIM;

    // -- the position's indices and q_t of the g heads -> SRAM --
    for (int s = tid; s < N_SEL; s += SLC_THREADS)
        idx_s[s] = sel[((long long)kv_bh * n_q + t) * N_SEL + s];
    attn_load_packed_rows_async<SLC_ROWS, DPAD, SLC_THREADS, GROUP, 1>(q_s, q, b, heads, h0, n_q, t,
                                                                       t + 1, HEAD_DIM, tid);
    attn_cp_async_commit();
    __syncthreads();                                             // idx_s visible
    nsa_sub next{0, n_t > 0 ? idx_s[0] * SBLOCK : 0};
    attn_load_kv_async<SELECT_TILE, DPAD, SLC_THREADS>(k_s, v_s, k_h, v_h, next.c0, n_k, HEAD_DIM, n_t, tid);

    float acc[DPAD / 8][4], m[2], l[2];
    attn_softmax_init<DPAD>(acc, m, l);
    const float scale_log2 = scale * ATTN_LOG2E;

    while (next.slot < n_t) {
        const int c0 = next.c0;
        next = nsa_next_sub(next, idx_s, n_t, kend);
        const bool more = next.slot < n_t;
        attn_cp_async_wait<1>();                               // q_t and K_s have landed
        __syncthreads();
        float s[SELECT_TILE / 8][4];
        attn_warp_qk<SELECT_TILE, DPAD>(s, q_s, k_s, wrow, lane);   // S = q_t K_sᵀ
        __syncthreads();                                       // every warp is done with K_s
        if (more) attn_load_tile_async<SELECT_TILE, DPAD, SLC_THREADS>(k_s, k_h, next.c0, n_k, HEAD_DIM, tid);
        attn_cp_async_commit();
        if (c0 + SELECT_TILE > kend) {                         // the current block's last keys
#pragma unroll
            for (int n = 0; n < SELECT_TILE / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    if (c0 + n * 8 + 2 * (lane & 3) + (e & 1) >= kend) s[n][e] = ATTN_NEG_INF;
        }
        attn_warp_softmax<SELECT_TILE, DPAD>(s, acc, m, l, scale_log2);
        attn_cp_async_wait<1>();                               // V_s has landed
        __syncthreads();
        attn_warp_pv<SELECT_TILE, DPAD>(acc, s, v_s, lane);    // O_slc += P V_s
        __syncthreads();                                       // every warp is done with V_s
        if (more) attn_load_tile_async<SELECT_TILE, DPAD, SLC_THREADS>(v_s, v_h, next.c0, n_k, HEAD_DIM, tid);
        attn_cp_async_commit();
    }
    attn_cp_async_wait<0>();

    // -- epilogue: o = g_cmp O_cmp + g_slc O_slc + g_win O_win (fp32) -> HBM --
    attn_quad_sum(l);
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int r = wrow + (lane >> 2) + 8 * hr;
        if (r >= GROUP) continue;
        const long long qrow = (long long)(b * heads + h0 + r) * n_q + t;
        const float g_cmp = gates[qrow * 3], g_slc = gates[qrow * 3 + 1], g_win = gates[qrow * 3 + 2];
        const float inv = l[hr] > 0.f ? g_slc / l[hr] : 0.f;
        const attn_t* oc = o_cmp + qrow * HEAD_DIM;
        const attn_t* ow = o_win + qrow * HEAD_DIM;
        attn_t* dst = o + qrow * HEAD_DIM;
#pragma unroll
        for (int n = 0; n < DPAD / 8; ++n) {
            const int col = n * 8 + 2 * (lane & 3);
            if (col >= HEAD_DIM) continue;
            const attn_f2 xc = attn_unpack2(*reinterpret_cast<const unsigned*>(oc + col));
            const attn_f2 xw = attn_unpack2(*reinterpret_cast<const unsigned*>(ow + col));
            *reinterpret_cast<unsigned*>(dst + col) =
                attn_pack2(g_cmp * xc.x + acc[n][2 * hr] * inv + g_win * xw.x,
                           g_cmp * xc.y + acc[n][2 * hr + 1] * inv + g_win * xw.y);
        }
    }
}
