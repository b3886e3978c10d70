// mla_decode.cu — multi-head latent attention decode, absorbed path (DeepSeek-AI 2024,
// "DeepSeek-V2", arXiv 2405.04434, §2.1), the port of algorithms/mla.py (``--path absorbed``)
// with the split-KV kernels of algorithms/kernels/splitkv.py.
//
// What it does: the cache holds per token one latent c_KV (DC columns) and one RoPE key k^R
// (DR columns) shared by all H heads. W_UK is folded into the query and W_UV into the output,
// so attention runs over the latent directly, as multi-query attention with one "KV head" of
// d_k = DC + DR whose first DC columns are also the values:
//   mla_absorb_q     q̃_h = q^C_h W_UK^h            per head a (B·N_q x d_h) @ (d_h x DC) GEMM
//   mla_attn         ô_h = softmax(scale [q̃_h ; q^R_h] [c_KV ; k^R]ᵀ) c_KV, split over keys;
//                    GROUP heads x BLOCK_Q tokens packed per CTA share every latent tile
//   mla_combine      merges the splits' fp32 partials (when there are several), a CTA per
//                    head and COMBINE_ROWS tokens
//   mla_absorb_o     o_h = ô_h W_UV^hᵀ                per head a (B·N_q x DC) @ (DC x d_h) GEMM
// Causal (several new tokens, bottom-right aligned): token i sees key j iff j <= i + N_k − N_q.
//
// The attention CTA: ROWS = GROUP·BLOCK_Q packed rows (row r: head h0 + r / BLOCK_Q, token
// r0 + r % BLOCK_Q), rounded up to 16, in ROWS/16 row tiles. One warp cannot hold a row
// tile's fp32 output (DC = 512 columns = 256 registers a thread), so COL_SLICES warps share
// each row tile (warp = row tile x slice): slice c owns DC / COL_SLICES output columns and
// computes S for BLOCK_K / COL_SLICES keys of the latent tile. Per key block: S on the warp's
// keys (mma.sync over all d_k), the row maxima combined through shared memory, P = exp(S − m)
// and the partial row sums; then, one key slice at a time, the owner warp writes its P slice
// to shared memory and every warp of the row tile adds P_slice V[slice keys, its columns]
// (V is the latent tile's first DC columns: ldmatrix.trans from the same tile). The same
// exchange as FlashMLA's sP; the simulator's plan declares these buffers (``P_slice``,
// ``row_stats``).
//
// Tile sizes (compile-time defines from the plan via algorithms/ports/):
//   GROUP = plan.head_block (heads per CTA), BLOCK_Q = plan.block_q (tokens per head),
//   BLOCK_K = plan.block_k (latent rows per tile), DC = plan.kv_lora_rank, DR = plan.rope_dim,
//   HEAD_DIM = d_h (the query/output head dim), COL_SLICES = splitkv.value_column_slices(DC),
//   TILE_M, TILE_N, TILE_K = plan.gemm_tile_m/n/k (the absorption GEMMs, attn_gemm.cuh).
// Shared memory of an attention CTA: Q (ROWS x d_k) + latent tile (BLOCK_K x d_k) at 2 bytes,
// P slice (ROWS x BLOCK_K/COL_SLICES, 2 bytes) and the row statistics (2 x ROWS x COL_SLICES
// fp32): the plan's smem_bytes when GROUP·BLOCK_Q is a multiple of 16 and d_k of 16.
// HBM traffic as the simulator counts: the GEMMs read their operands tile by tile and write
// q̃ / o once; the attention reads Q once per split and each latent tile once per (pack,
// query block); partials 4 (DC + 1) bytes per (row, split), read back by the combine.
// Tensor cores: mma.sync m16n8k16 (fp16 or bf16 in, fp32 accumulate) throughout.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_gemm.cuh"      // gemm_cta, TILE_M/N/K (includes attn_common.cuh)

#ifndef GROUP
#define GROUP 16
#endif
#ifndef BLOCK_Q
#define BLOCK_Q 1
#endif
#ifndef BLOCK_K
#define BLOCK_K 128
#endif
#ifndef DC
#define DC 512
#endif
#ifndef DR
#define DR 64
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef COL_SLICES
#define COL_SLICES 4
#endif

#define DK (DC + DR)
#define DKPAD ATTN_PAD16(DK)
#define ROWS_PAD (((GROUP * BLOCK_Q + 15) / 16) * 16)
#define ROW_TILES (ROWS_PAD / 16)
#define KEY_SLICE (BLOCK_K / COL_SLICES)      // keys of S per warp, and of one P exchange
#define VAL_SLICE (DC / COL_SLICES)           // output columns per warp
#define NWARPS (ROW_TILES * COL_SLICES)
#define NTHREADS (NWARPS * 32)
#define COMBINE_THREADS (((DC + 31) / 32) * 32)
#ifndef COMBINE_ROWS
#define COMBINE_ROWS 4
#endif

static_assert(NWARPS <= 32, "ROWS_PAD / 16 x COL_SLICES warps must be <= 32");
static_assert(KEY_SLICE % 16 == 0, "BLOCK_K / COL_SLICES must be a multiple of 16");
static_assert(VAL_SLICE % 16 == 0, "DC / COL_SLICES must be a multiple of 16");
static_assert(DC % 8 == 0 && DR % 8 == 0 && HEAD_DIM % 8 == 0,
              "DC, DR and HEAD_DIM must be multiples of 8 (16-byte rows)");

// ---- the absorption GEMMs -------------------------------------------------------------------

// q_lat[b, h, i] = q_nope[b, h, i] W_UK[h]: q_nope (B, H, n_q, HEAD_DIM), w_uk (H, HEAD_DIM,
// DC), q_lat (B, H, n_q, DC). Grid (ceil(DC / TILE_N), ceil(B·n_q / TILE_M), H).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
mla_absorb_q(const attn_t* __restrict__ q_nope, const attn_t* __restrict__ w_uk,
             attn_t* __restrict__ q_lat, int batch, int n_q, int heads) {
    const int h = blockIdx.z;
    gemm_cta<false>(q_nope + (long long)h * n_q * HEAD_DIM,
                    attn_rows{n_q, (long long)heads * n_q * HEAD_DIM, HEAD_DIM},
                    w_uk + (long long)h * HEAD_DIM * DC, DC,
                    q_lat + (long long)h * n_q * DC, attn_rows{n_q, (long long)heads * n_q * DC, DC},
                    batch * n_q, DC, HEAD_DIM, 1.f);
}

// o[b, h, i] = o_lat[b, h, i] W_UV[h]ᵀ: o_lat (B, H, n_q, DC), w_uv (H, HEAD_DIM, DC),
// o (B, H, n_q, HEAD_DIM). Grid (ceil(HEAD_DIM / TILE_N), ceil(B·n_q / TILE_M), H).
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
mla_absorb_o(const attn_t* __restrict__ o_lat, const attn_t* __restrict__ w_uv,
             attn_t* __restrict__ o, int batch, int n_q, int heads) {
    const int h = blockIdx.z;
    gemm_cta<true>(o_lat + (long long)h * n_q * DC, attn_rows{n_q, (long long)heads * n_q * DC, DC},
                   w_uv + (long long)h * HEAD_DIM * DC, DC,
                   o + (long long)h * n_q * HEAD_DIM,
                   attn_rows{n_q, (long long)heads * n_q * HEAD_DIM, HEAD_DIM},
                   batch * n_q, HEAD_DIM, DC, 1.f);
}

// ---- attention over the latent -------------------------------------------------------------

// O_slice += P_slice V for the warp's 16 rows: P (16 x KEY_SLICE) from the exchange tile p_s
// (ldmatrix), V = latent rows [key0, key0 + KEY_SLICE) x columns [col0, col0 + VAL_SLICE)
// of the latent tile (ldmatrix.trans).
__device__ __forceinline__ void warp_pv_slice(float (*o)[4], const attn_t* p_s,
                                              const attn_t* lat_s, int wrow, int key0, int col0,
                                              int lane) {
    constexpr int CPR_P = KEY_SLICE / 8, CPR = DKPAD / 8;
#pragma unroll 1
    for (int kk = 0; kk < KEY_SLICE / 16; ++kk) {
        unsigned a[4];
        const int arow = wrow + (lane & 7) + ((lane >> 3) & 1) * 8;
        attn_ldmatrix_x4(a, p_s + attn_swizzle(arow, kk * 2 + (lane >> 4), CPR_P));
#pragma unroll
        for (int n = 0; n < VAL_SLICE / 16; ++n) {
            unsigned b[4];
            const int vrow = key0 + kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            attn_ldmatrix_x4_trans(b, lat_s + attn_swizzle(vrow, col0 / 8 + n * 2 + (lane >> 4), CPR));
            attn_mma16816(o[2 * n], a, b[0], b[1]);
            attn_mma16816(o[2 * n + 1], a, b[2], b[3]);
        }
    }
}

// Arguments:
//   q_lat (B, H, n_q, DC), q_rope (B, H, n_q, DR): the query's latent and RoPE parts;
//   c_kv (B, n_k, DC), k_rope (B, n_k, DR): the cache;
//   o_part (B·H, n_splits, n_q, DC), lse_part (B·H, n_splits, n_q): fp32 partials (several
//   splits); o_lat (B, H, n_q, DC) and lse (B, H, n_q) fp32 (one split).
// Grid (n_splits, B · (H / GROUP) · ceil(n_q / BLOCK_Q)); block NTHREADS.
extern "C" __global__ void __launch_bounds__(NTHREADS)
mla_attn(const attn_t* __restrict__ q_lat, const attn_t* __restrict__ q_rope,
         const attn_t* __restrict__ c_kv, const attn_t* __restrict__ k_rope,
         float* __restrict__ o_part, float* __restrict__ lse_part, attn_t* __restrict__ o_lat,
         float* __restrict__ lse, int n_q, int n_k, int heads, float scale, int causal) {
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // ROWS_PAD x DKPAD (attn_gemm.cuh)
    attn_t* lat_s = q_s + ROWS_PAD * DKPAD;                      // latent tile: BLOCK_K x DKPAD
    attn_t* p_s = lat_s + BLOCK_K * DKPAD;                       // P slice: ROWS_PAD x KEY_SLICE
    float* row_max = reinterpret_cast<float*>(p_s + ROWS_PAD * KEY_SLICE);  // [COL_SLICES][ROWS_PAD]
    float* row_sum = row_max + COL_SLICES * ROWS_PAD;                      // [COL_SLICES][ROWS_PAD]
    constexpr int CPR = DKPAD / 8;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wrow = (warp / COL_SLICES) * 16;                 // the warp's row tile
    const int slice = warp % COL_SLICES;                       // its keys of S, columns of O
    const int split = blockIdx.x, n_splits = gridDim.x;
    const int packs = heads / GROUP, t_r = (n_q + BLOCK_Q - 1) / BLOCK_Q;
    const int rb = blockIdx.y % t_r;
    const int pack = (blockIdx.y / t_r) % packs;
    const int b = blockIdx.y / (t_r * packs);
    const int h0 = pack * GROUP;
    const int r0 = rb * BLOCK_Q, r1 = min(r0 + BLOCK_Q, n_q);

    const attn_split_keys keys = attn_split_range<BLOCK_K>(split, n_splits, n_q, n_k, r1, causal);
    const int k_lo = keys.k_lo, k_hi = keys.k_hi, n_blocks = keys.n_blocks;
    const int shift = n_k - n_q;

    // -- packed query rows [q̃ ; q^R] -> SRAM (padding rows and columns zero) --
    for (int idx = tid; idx < ROWS_PAD * CPR; idx += NTHREADS) {
        const int r = idx / CPR, ch = idx % CPR;
        const int hh = r / BLOCK_Q, i = r0 + r % BLOCK_Q;
        const long long row = ((long long)b * heads + h0 + hh) * n_q + i;
        const bool ok = hh < GROUP && i < r1 && ch * 8 < DK;
        const attn_t* src = !ok ? q_lat
                          : ch * 8 < DC ? q_lat + row * DC + ch * 8
                                        : q_rope + row * DR + (ch * 8 - DC);
        attn_cp_async16(q_s + attn_swizzle(r, ch, CPR), src, ok ? 16 : 0);
    }
    attn_cp_async_commit();

    // latent rows [c0, c0 + BLOCK_K) of the sequence, [c_KV ; k^R]; rows >= k_hi zero
    auto load_latent = [&](int c0) {
        for (int idx = tid; idx < BLOCK_K * CPR; idx += NTHREADS) {
            const int r = idx / CPR, ch = idx % CPR;
            const long long key = (long long)b * n_k + c0 + r;
            const bool ok = c0 + r < k_hi && ch * 8 < DK;
            const attn_t* src = !ok ? c_kv
                              : ch * 8 < DC ? c_kv + key * DC + ch * 8
                                            : k_rope + key * DR + (ch * 8 - DC);
            attn_cp_async16(lat_s + attn_swizzle(r, ch, CPR), src, ok ? 16 : 0);
        }
        attn_cp_async_commit();
    };
    if (n_blocks > 0) load_latent(k_lo);

    float acc[VAL_SLICE / 8][4];                               // this warp's output columns
    float m[2], l[2];                                          // full-row max and sum
    attn_softmax_init<VAL_SLICE>(acc, m, l);
    const float scale_log2 = scale * ATTN_LOG2E;
    const int my_row = wrow + (lane >> 2);                     // and my_row + 8

    for (int j = 0; j < n_blocks; ++j) {
        const int c0 = k_lo + j * BLOCK_K;
        attn_cp_async_wait<0>();                               // Q and the latent tile landed
        __syncthreads();
        // -- S = Q_rows K_sliceᵀ over all d_k, masked --
        float s[KEY_SLICE / 8][4];
        // s = Q_rows K_sliceᵀ over all d_k (36 MMA k-steps for 576 columns), k loop rolled:
        // fully unrolled, a 16-warp CTA (128 registers a thread) spills
        attn_warp_qk_rolled<KEY_SLICE, DKPAD>(s, q_s, lat_s + slice * KEY_SLICE * DKPAD, wrow,
                                              lane);
        const int key0 = c0 + slice * KEY_SLICE;
        if (causal || c0 + BLOCK_K > k_hi) {
#pragma unroll
            for (int n = 0; n < KEY_SLICE / 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = key0 + n * 8 + 2 * (lane & 3) + (e & 1);
                    const int i = r0 + (my_row + (e >> 1) * 8) % BLOCK_Q;
                    if (key >= k_hi || (causal && key > i + shift)) s[n][e] = ATTN_NEG_INF;
                }
        }
        // -- the row maxima over all slices of the block (through shared memory) --
        float mx[2] = {ATTN_NEG_INF, ATTN_NEG_INF};
#pragma unroll
        for (int n = 0; n < KEY_SLICE / 8; ++n) {
            mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]) * scale_log2);
            mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]) * scale_log2);
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        }
        if ((lane & 3) == 0) {
            attn_st_shared_f32(row_max + slice * ROWS_PAD + my_row, mx[0]);
            attn_st_shared_f32(row_max + slice * ROWS_PAD + my_row + 8, mx[1]);
        }
        __syncthreads();
        float base[2], part[2] = {0.f, 0.f};
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float m_new = m[r];
#pragma unroll
            for (int c = 0; c < COL_SLICES; ++c)
                m_new = fmaxf(m_new, attn_ld_shared_f32(row_max + c * ROWS_PAD + my_row + 8 * r));
            // a row that has seen no visible key keeps max -inf: subtract 0, exp2 gives 0
            base[r] = m_new == ATTN_NEG_INF ? 0.f : m_new;
            const float alpha = exp2f(m[r] - base[r]);
            m[r] = m_new;
            l[r] *= alpha;
#pragma unroll
            for (int n = 0; n < VAL_SLICE / 8; ++n) { acc[n][2 * r] *= alpha; acc[n][2 * r + 1] *= alpha; }
        }
#pragma unroll
        for (int n = 0; n < KEY_SLICE / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[n][e] = exp2f(fmaf(s[n][e], scale_log2, -base[e >> 1]));
                part[e >> 1] += s[n][e];
            }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            part[r] += __shfl_xor_sync(0xffffffffu, part[r], 1);
            part[r] += __shfl_xor_sync(0xffffffffu, part[r], 2);
        }
        if ((lane & 3) == 0) {
            attn_st_shared_f32(row_sum + slice * ROWS_PAD + my_row, part[0]);
            attn_st_shared_f32(row_sum + slice * ROWS_PAD + my_row + 8, part[1]);
        }
        // -- O += P V, one key slice at a time: its owner publishes P, the row tile uses it --
#pragma unroll 1
        for (int c = 0; c < COL_SLICES; ++c) {
            if (slice == c) {
#pragma unroll
                for (int n = 0; n < KEY_SLICE / 8; ++n) {
                    const int col = 2 * (lane & 3);
                    attn_st_shared32(p_s + attn_swizzle(my_row, n, KEY_SLICE / 8) + col,
                                     attn_pack2(s[n][0], s[n][1]));
                    attn_st_shared32(p_s + attn_swizzle(my_row + 8, n, KEY_SLICE / 8) + col,
                                     attn_pack2(s[n][2], s[n][3]));
                }
            }
            __syncthreads();                                   // P slice c (and row sums) visible
            if (c == 0) {
#pragma unroll
                for (int r = 0; r < 2; ++r)
#pragma unroll
                    for (int cc = 0; cc < COL_SLICES; ++cc)
                        l[r] += attn_ld_shared_f32(row_sum + cc * ROWS_PAD + my_row + 8 * r);
            }
            warp_pv_slice(acc, p_s, lat_s, wrow, c * KEY_SLICE, slice * VAL_SLICE, lane);
            __syncthreads();                                   // P slice c and the tile consumed
        }
        if (j + 1 < n_blocks) load_latent(c0 + BLOCK_K);
    }
    attn_cp_async_wait<0>();

    // -- epilogue: the warp's columns of O = acc / l; lse = m + log l (slice 0 writes it) --
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int r = my_row + hr * 8;
        const int hh = r / BLOCK_Q, i = r0 + r % BLOCK_Q;
        if (hh >= GROUP || i >= r1) continue;
        const long long bh = (long long)b * heads + h0 + hh;
        const float inv = l[hr] > 0.f ? 1.f / l[hr] : 0.f;
        const float row_lse = l[hr] > 0.f ? (m[hr] + log2f(l[hr])) * ATTN_LN2 : ATTN_NEG_INF;
        const bool final_out = n_splits == 1;
        const long long prow = (bh * n_splits + split) * n_q + i;
#pragma unroll
        for (int n = 0; n < VAL_SLICE / 8; ++n) {
            const int col = slice * VAL_SLICE + n * 8 + 2 * (lane & 3);
            const float x0 = acc[n][2 * hr] * inv, x1 = acc[n][2 * hr + 1] * inv;
            if (final_out)
                *reinterpret_cast<unsigned*>(o_lat + (bh * n_q + i) * DC + col) = attn_pack2(x0, x1);
            else
                *reinterpret_cast<attn_f2*>(o_part + prow * DC + col) = attn_f2{x0, x1};
        }
        if (slice == 0 && (lane & 3) == 0) {
            if (final_out) lse[bh * n_q + i] = row_lse;
            else lse_part[prow] = row_lse;
        }
    }
}

// Merge the n_splits partials of COMBINE_ROWS rows of one query head into o_lat and lse.
// Grid (B·H, ceil(n_q / COMBINE_ROWS)).
extern "C" __global__ void __launch_bounds__(COMBINE_THREADS)
mla_combine(const float* __restrict__ o_part, const float* __restrict__ lse_part,
            attn_t* __restrict__ o_lat, float* __restrict__ lse, int n_q, int n_splits) {
    attn_combine_rows<DC, COMBINE_ROWS>(o_part, lse_part, o_lat, lse, n_q, n_splits);
}
