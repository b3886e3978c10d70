// attn_common.cuh — device helpers shared by the attention ports (sm_80 and newer).
//
// What is here: inline-PTX wrappers for the sm80 tensor-core path (ldmatrix, mma.sync
// m16n8k16 with fp16 or bf16 inputs and fp32 accumulators), cp.async copies HBM -> shared memory with
// zero fill for rows past the end of a ragged sequence, an XOR swizzle of 16-byte chunks that
// keeps ldmatrix free of bank conflicts without padding (so a tile's shared-memory footprint
// is exactly rows x head_dim x 2 bytes, the bytes the simulator's plan declares), and the
// pieces of a FlashAttention kernel: the prologue's copies (packed query rows, the first K
// and V tiles as their own commit groups) and starting softmax state, and the warp-level tile
// step S = Q Kᵀ, the online-softmax update and O += P V. A warp owns 16 query rows of the
// tile (one m16 MMA row block); each thread owns rows (lane / 4) and (lane / 4 + 8) of them.
//
// Header only and self-contained — no include at all, not even cuda_fp16.h: the sources are
// compiled by NVRTC through CuPy (the backend inlines this file in place of its #include
// line) and by nvcc in CI. fp16/bf16 values are 16-bit storage converted with PTX cvt, so the
// build does not depend on which fp16 headers CuPy bundles (cupy/cupy#7758, #8466).
#pragma once

// 16-byte and 8-byte vectors for wide loads/stores (our own: no vector_types.h needed).
struct alignas(16) attn_u4 { unsigned x, y, z, w; };
struct alignas(8) attn_f2 { float x, y; };

// Head dimension padded to the MMA k-step of 16; padded columns are zero in shared memory.
#define ATTN_PAD16(d) ((((d) + 15) / 16) * 16)

// log2(e): softmax runs in base 2, exp(x) = exp2(x * log2(e)), so the scale and log2(e)
// fold into one multiply per score.
#define ATTN_LOG2E 1.4426950408889634f
#define ATTN_LN2 0.6931471805599453f
#define ATTN_NEG_INF (-__int_as_float(0x7f800000))

// ---- shared-memory layout ---------------------------------------------------------------

// Offset (in halves) of 16-byte chunk `chunk` of row `row` in a tile whose rows hold
// `cpr` chunks (cpr = padded head_dim / 8). The chunk index is XORed with a function of the
// row so that the 8 rows an ldmatrix phase reads fall in 8 distinct bank groups. When cpr is
// a multiple of 8 the XOR touches only the low 3 bits, so a chunk stays inside its aligned
// group of 8 (and its row): 64, 128, 256 but also 192 or MLA's 576 columns; 4 and 2 chunks
// per row use the XOR that spreads 2 or 4 consecutive rows; other widths stay linear.
__device__ __forceinline__ int attn_swizzle(int row, int chunk, int cpr) {
    int x = 0;
    if (cpr % 8 == 0)  x = row & 7;
    else if (cpr == 4) x = (row >> 1) & 3;
    else if (cpr == 2) x = (row >> 2) & 1;
    return row * cpr * 8 + ((chunk ^ x) * 8);
}

// ---- inline PTX -------------------------------------------------------------------------
// (ATTN_PTX_EMULATION: tests/cuda_emu provides portable C++ versions of these wrappers so the
// kernels can be executed on a CPU in the tests; never defined for NVRTC or nvcc builds.)
#ifndef ATTN_PTX_EMULATION

// Storage element: 16-bit fp16 (IEEE binary16) by default, bf16 when ATTN_BF16 is defined
// (algorithms/ports sets it for --dtype bf16). Kernels see only attn_t and the conversions below;
// conversions to storage round to nearest even; the MMAs accumulate in fp32 either way.
struct alignas(2) attn_t { unsigned short x; };

#ifdef ATTN_BF16
#define ATTN_MMA_TYPE "bf16"
#define ATTN_CVT_FROM_F32 "cvt.rn.bf16.f32"
#define ATTN_CVT_PACK2 "cvt.rn.bf16x2.f32"
#else
#define ATTN_MMA_TYPE "f16"
#define ATTN_CVT_FROM_F32 "cvt.rn.f16.f32"
#define ATTN_CVT_PACK2 "cvt.rn.f16x2.f32"
#endif

__device__ __forceinline__ float attn_to_f32(attn_t h) {
#ifdef ATTN_BF16
    // exact: the bf16 bits are the top half of the fp32 bits (a shift works on sm_80, where
    // cvt.f32.bf16 does not exist: it needs sm_90)
    return __int_as_float(static_cast<int>(static_cast<unsigned>(h.x) << 16));
#else
    float f;
    asm("cvt.f32.f16 %0, %1;\n" : "=f"(f) : "h"(h.x));
    return f;
#endif
}
__device__ __forceinline__ attn_t attn_from_f32(float f) {
    attn_t h;
    asm(ATTN_CVT_FROM_F32 " %0, %1;\n" : "=h"(h.x) : "f"(f));
    return h;
}
// Two floats -> one 2 x 16-bit register: `lo` in bits 0-15 (the lower column / address).
__device__ __forceinline__ unsigned attn_pack2(float lo, float hi) {
    unsigned r;
    asm(ATTN_CVT_PACK2 " %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ attn_f2 attn_unpack2(unsigned v) {
    attn_t lo, hi;
    lo.x = static_cast<unsigned short>(v & 0xffffu);
    hi.x = static_cast<unsigned short>(v >> 16);
    return attn_f2{attn_to_f32(lo), attn_to_f32(hi)};
}

__device__ __forceinline__ unsigned attn_smem_addr(const void* p) {
    unsigned long long a;
    asm("cvta.to.shared.u64 %0, %1;\n" : "=l"(a) : "l"(p));
    return static_cast<unsigned>(a);
}

// 16 bytes HBM -> shared memory, asynchronous; src_bytes = 0 writes zeros (ragged rows).
__device__ __forceinline__ void attn_cp_async16(void* smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(attn_smem_addr(smem)), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void attn_cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}
// Wait until at most `n` committed groups are still in flight.
template <int n>
__device__ __forceinline__ void attn_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" :: "n"(n));
}

// Four 8x8 b16 matrices; lane l supplies the address of row (l % 8) of matrix (l / 8) and
// receives, from each matrix m, row (l / 4) elements 2 (l % 4), +1 in r[m].
__device__ __forceinline__ void attn_ldmatrix_x4(unsigned r[4], const attn_t* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(attn_smem_addr(p)));
}
// Same, transposed: from each matrix, column (l / 4), rows 2 (l % 4), +1.
__device__ __forceinline__ void attn_ldmatrix_x4_trans(unsigned r[4], const attn_t* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(attn_smem_addr(p)));
}

// D = A B + D: A 16x16 (row), B 16x8 (col) in the storage type (fp16 or bf16), D 16x8 fp32.
__device__ __forceinline__ void attn_mma16816(float d[4], const unsigned a[4], unsigned b0,
                                              unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32." ATTN_MMA_TYPE "." ATTN_MMA_TYPE ".f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Plain shared-memory accesses that other warps see after a barrier (a probability tile
// exchanged between warps, row statistics): on the GPU ordinary stores and loads; the CPU
// emulator checks them for races (a read or write of bytes another warp touched since the
// last __syncthreads).
__device__ __forceinline__ void attn_st_shared32(void* p, unsigned v) {
    *reinterpret_cast<unsigned*>(p) = v;
}
__device__ __forceinline__ void attn_st_shared_f32(float* p, float v) { *p = v; }
__device__ __forceinline__ float attn_ld_shared_f32(const float* p) { return *p; }
#endif  // ATTN_PTX_EMULATION


// ---- tile movement ----------------------------------------------------------------------

// Issue the copy of rows [row0, row0 + kRows) x head_dim `d` of a row-major (n_rows x d)
// 16-bit matrix into a swizzled kRows x kDpad shared tile. Rows >= n_rows and columns >= d are
// zero-filled. d must be a multiple of 8 (16-byte chunks). All threads of the CTA call it.
template <int kRows, int kDpad, int kThreads>
__device__ __forceinline__ void attn_load_tile_async(attn_t* tile, const attn_t* mat, int row0,
                                                     int n_rows, int d, int tid) {
    constexpr int CPR = kDpad / 8;
    for (int idx = tid; idx < kRows * CPR; idx += kThreads) {
        const int r = idx / CPR, ch = idx % CPR;
        const int g = row0 + r;
        const bool valid = g < n_rows && ch * 8 < d;
        const attn_t* src = valid ? mat + (long long)g * d + ch * 8 : mat;
        attn_cp_async16(tile + attn_swizzle(r, ch, CPR), src, valid ? 16 : 0);
    }
}

// Issue the copy of the packed query rows of kGroup heads into a swizzled kRows x kDpad tile:
// tile row r is token r0 + r % kBlockQ of head h0 + r / kBlockQ of batch b in q (B, heads,
// n_q, d). Tokens >= r1, heads past kGroup (the tile's padding rows) and columns >= d are
// zero-filled. d must be a multiple of 8. All kThreads threads of the CTA call it.
template <int kRows, int kDpad, int kThreads, int kGroup, int kBlockQ>
__device__ __forceinline__ void attn_load_packed_rows_async(attn_t* tile, const attn_t* q, int b,
                                                            int heads, int h0, int n_q, int r0,
                                                            int r1, int d, int tid) {
    constexpr int CPR = kDpad / 8;
    for (int idx = tid; idx < kRows * CPR; idx += kThreads) {
        const int r = idx / CPR, ch = idx % CPR;
        const int hh = r / kBlockQ, i = r0 + r % kBlockQ;
        const bool ok = hh < kGroup && i < r1 && ch * 8 < d;
        // b · heads + h0 formed here, not passed in: nsa_cmp's SASS depends on it
        const attn_t* src = ok ? q + ((long long)(b * heads + h0 + hh) * n_q + i) * d + ch * 8 : q;
        attn_cp_async16(tile + attn_swizzle(r, ch, CPR), src, ok ? 16 : 0);
    }
}

// The K and V groups of an online-softmax prologue: the copies of rows [row0, row0 + kBK) of
// k into k_s, then of v into v_s (attn_load_tile_async), as two commit groups — K's, then V's —
// after the caller's committed Q group. The loop's first attn_cp_async_wait<1> then finds Q and
// K landed, its second V. `n_tiles`: the key tiles the loop visits; with none both groups are
// committed empty, so that the group count stays the same.
template <int kBK, int kDpad, int kThreads>
__device__ __forceinline__ void attn_load_kv_async(attn_t* k_s, attn_t* v_s, const attn_t* k,
                                                   const attn_t* v, int row0, int n_rows, int d,
                                                   int n_tiles, int tid) {
    if (n_tiles > 0) attn_load_tile_async<kBK, kDpad, kThreads>(k_s, k, row0, n_rows, d, tid);
    attn_cp_async_commit();
    if (n_tiles > 0) attn_load_tile_async<kBK, kDpad, kThreads>(v_s, v, row0, n_rows, d, tid);
    attn_cp_async_commit();
}

// Copy a swizzled kRows x kDpad shared tile (16-bit) to rows [row0, ..) of a row-major
// (n_rows x d) matrix in HBM, skipping rows >= n_rows and padded columns. `lane`, `nlanes`:
// the threads taking part (a warp storing its own rows, or the whole CTA).
template <int kRows, int kDpad>
__device__ __forceinline__ void attn_store_tile(attn_t* mat, const attn_t* tile, int row0,
                                                int n_rows, int d, int lane, int nlanes) {
    constexpr int CPR = kDpad / 8;
    for (int idx = lane; idx < kRows * CPR; idx += nlanes) {
        const int r = idx / CPR, ch = idx % CPR;
        const int g = row0 + r;
        if (g < n_rows && ch * 8 < d)
            *reinterpret_cast<attn_u4*>(mat + (long long)g * d + ch * 8) =
                *reinterpret_cast<const attn_u4*>(tile + attn_swizzle(r, ch, CPR));
    }
}

// ---- warp-level FlashAttention tile step -------------------------------------------------

// s[t][kBK/8][4] = Q_w K_jᵀ for the warp's kMT row tiles of 16 rows (tile t starts at tile
// row wrow + 16 t) and the kBK keys of the shared tile k_s; each K fragment loaded from shared
// memory serves all kMT row tiles. C-fragment layout: s[t][n][0..1] row lane/4, keys
// 8n + 2(lane%4) +0/1; s[t][n][2..3] the same keys for row lane/4 + 8.
template <int kMT, int kBK, int kDpad>
__device__ __forceinline__ void attn_warp_qk_mt(float (&s)[kMT][kBK / 8][4], const attn_t* q_s,
                                                const attn_t* k_s, int wrow, int lane) {
    constexpr int CPR = kDpad / 8;
#pragma unroll
    for (int t = 0; t < kMT; ++t)
#pragma unroll
        for (int n = 0; n < kBK / 8; ++n)
            s[t][n][0] = s[t][n][1] = s[t][n][2] = s[t][n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kDpad / 16; ++kk) {
        unsigned a[kMT][4];
#pragma unroll
        for (int t = 0; t < kMT; ++t) {
            // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (8-15, 8-15)
            const int arow = wrow + 16 * t + (lane & 7) + ((lane >> 3) & 1) * 8;
            attn_ldmatrix_x4(a[t], q_s + attn_swizzle(arow, kk * 2 + (lane >> 4), CPR));
        }
#pragma unroll
        for (int n = 0; n < kBK / 16; ++n) {
            unsigned b[4];
            // B = Kᵀ: matrices (keys 0-7, k 0-7), (keys 0-7, k 8-15), (keys 8-15, k 0-7), ...
            const int krow = n * 16 + (lane & 7) + (lane >> 4) * 8;
            attn_ldmatrix_x4(b, k_s + attn_swizzle(krow, kk * 2 + ((lane >> 3) & 1), CPR));
#pragma unroll
            for (int t = 0; t < kMT; ++t) {
                attn_mma16816(s[t][2 * n], a[t], b[0], b[1]);
                attn_mma16816(s[t][2 * n + 1], a[t], b[2], b[3]);
            }
        }
    }
}

// One row tile (16 rows) of attn_warp_qk_mt.
template <int kBK, int kDpad>
__device__ __forceinline__ void attn_warp_qk(float (*s)[4], const attn_t* q_s, const attn_t* k_s,
                                             int wrow, int lane) {
    attn_warp_qk_mt<1, kBK, kDpad>(*reinterpret_cast<float (*)[1][kBK / 8][4]>(s), q_s, k_s,
                                   wrow, lane);
}

// attn_warp_qk with the k-step loop rolled: for wide rows (the 192- and 576-column keys of
// mla_upproject.cu and mla_decode.cu), where fully unrolled ptxas keeps the ldmatrix
// fragments of many k-steps live beside the fp32 accumulators and spills.
template <int kBK, int kDpad>
__device__ __forceinline__ void attn_warp_qk_rolled(float (*s)[4], const attn_t* q_s,
                                                    const attn_t* k_s, int wrow, int lane) {
    constexpr int CPR = kDpad / 8;
#pragma unroll
    for (int n = 0; n < kBK / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll 1
    for (int kk = 0; kk < kDpad / 16; ++kk) {
        unsigned a[4];
        const int arow = wrow + (lane & 7) + ((lane >> 3) & 1) * 8;
        attn_ldmatrix_x4(a, q_s + attn_swizzle(arow, kk * 2 + (lane >> 4), CPR));
#pragma unroll
        for (int n = 0; n < kBK / 16; ++n) {
            unsigned b[4];
            const int krow = n * 16 + (lane & 7) + (lane >> 4) * 8;
            attn_ldmatrix_x4(b, k_s + attn_swizzle(krow, kk * 2 + ((lane >> 3) & 1), CPR));
            attn_mma16816(s[2 * n], a, b[0], b[1]);
            attn_mma16816(s[2 * n + 1], a, b[2], b[3]);
        }
    }
}

// Mask scores in place: key `key0 + col` is hidden from query `q_row` when it is past the
// end of the keys, or (causal, bottom-right aligned) when key > q_row + n_k - n_q.
template <int kBK>
__device__ __forceinline__ void attn_warp_mask(float (*s)[4], int q_row0, int key0, int n_k,
                                               int causal_shift, bool causal, int lane) {
#pragma unroll
    for (int n = 0; n < kBK / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int key = key0 + n * 8 + 2 * (lane & 3) + (e & 1);
            const int row = q_row0 + (lane >> 2) + (e >> 1) * 8;
            if (key >= n_k || (causal && key > row + causal_shift)) s[n][e] = ATTN_NEG_INF;
        }
    }
}

// General window mask (flash-attn's window_size, bottom-right aligned): key j is visible to
// query i iff j < n_k, j >= i + shift - window_left (when window_left >= 0) and
// j <= i + shift + window_right (when window_right >= 0); shift = n_k - n_q. Causal is
// window_right = 0; -1 means unbounded on that side.
template <int kBK>
__device__ __forceinline__ void attn_warp_mask_window(float (*s)[4], int q_row0, int key0,
                                                      int n_k, int shift, int window_left,
                                                      int window_right, int lane) {
#pragma unroll
    for (int n = 0; n < kBK / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int key = key0 + n * 8 + 2 * (lane & 3) + (e & 1);
            const int row = q_row0 + (lane >> 2) + (e >> 1) * 8;
            const bool hidden = key >= n_k
                || (window_left >= 0 && key < row + shift - window_left)
                || (window_right >= 0 && key > row + shift + window_right);
            if (hidden) s[n][e] = ATTN_NEG_INF;
        }
    }
}

// True when tile rows [r0, r1) x keys [c0, c1) has an entry hidden by the window (or past n_k).
__device__ __forceinline__ bool attn_tile_needs_mask(int r0, int r1, int c0, int c1, int n_k,
                                                     int shift, int window_left, int window_right) {
    if (c1 > n_k) return true;
    if (window_right >= 0 && c1 - 1 > r0 + shift + window_right) return true;
    if (window_left >= 0 && c0 < (r1 - 1) + shift - window_left) return true;
    return false;
}

// The online softmax's state before the first key tile, for the thread's two rows: the O
// accumulator (kDpad columns) zero, the running max -inf (no key seen) and the running sum 0.
template <int kDpad>
__device__ __forceinline__ void attn_softmax_init(float (*o)[4], float m[2], float l[2]) {
#pragma unroll
    for (int n = 0; n < kDpad / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    m[0] = m[1] = ATTN_NEG_INF;
    l[0] = l[1] = 0.f;
}

// Online-softmax update for the thread's two rows. Scores arrive unscaled; `scale_log2`
// = softmax scale * log2(e). m[] holds running maxima of the scaled base-2 logits, l[] the
// running sums (per thread: a partial sum over the keys this thread holds; the quad's
// partial sums are added at the end). On return s holds P~ = exp2(x - m_new) and o is
// rescaled by exp2(m_old - m_new).
template <int kBK, int kDpad>
__device__ __forceinline__ void attn_warp_softmax(float (*s)[4], float (*o)[4], float m[2],
                                                  float l[2], float scale_log2) {
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int n = 0; n < kBK / 8; ++n) {
        mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]) * scale_log2);
        mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]) * scale_log2);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {          // the 4 threads of a quad hold one row
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        // a row that has seen no visible key keeps max -inf: subtract 0 so exp2 gives 0, not NaN
        base[r] = (mx[r] == ATTN_NEG_INF) ? 0.f : mx[r];
        alpha[r] = exp2f(m[r] - base[r]);
        m[r] = mx[r];
        l[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < kBK / 8; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = e >> 1;
            s[n][e] = exp2f(fmaf(s[n][e], scale_log2, -base[r]));
            l[r] += s[n][e];
        }
    }
#pragma unroll
    for (int n = 0; n < kDpad / 8; ++n) {
        o[n][0] *= alpha[0]; o[n][1] *= alpha[0];
        o[n][2] *= alpha[1]; o[n][3] *= alpha[1];
    }
}

// o[t][kDpad/8][4] += P V_j for the warp's kMT row tiles: P from the score registers (C
// layout reinterpreted as the A layout of the next MMA, rounded to the storage type), V from the shared
// tile v_s (B via ldmatrix.trans); each V fragment serves all kMT row tiles.
template <int kMT, int kBK, int kDpad>
__device__ __forceinline__ void attn_warp_pv_mt(float (&o)[kMT][kDpad / 8][4],
                                                float (&s)[kMT][kBK / 8][4], const attn_t* v_s,
                                                int lane) {
    constexpr int CPR = kDpad / 8;
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
        unsigned a[kMT][4];
#pragma unroll
        for (int t = 0; t < kMT; ++t) {
            a[t][0] = attn_pack2(s[t][2 * kk][0], s[t][2 * kk][1]);
            a[t][1] = attn_pack2(s[t][2 * kk][2], s[t][2 * kk][3]);
            a[t][2] = attn_pack2(s[t][2 * kk + 1][0], s[t][2 * kk + 1][1]);
            a[t][3] = attn_pack2(s[t][2 * kk + 1][2], s[t][2 * kk + 1][3]);
        }
#pragma unroll
        for (int n = 0; n < kDpad / 16; ++n) {
            unsigned b[4];
            // B = V: matrices (keys 0-7, dims 0-7), (keys 8-15, dims 0-7), (keys 0-7, dims 8-15), ...
            const int vrow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
            attn_ldmatrix_x4_trans(b, v_s + attn_swizzle(vrow, n * 2 + (lane >> 4), CPR));
#pragma unroll
            for (int t = 0; t < kMT; ++t) {
                attn_mma16816(o[t][2 * n], a[t], b[0], b[1]);
                attn_mma16816(o[t][2 * n + 1], a[t], b[2], b[3]);
            }
        }
    }
}

// One row tile (16 rows) of attn_warp_pv_mt.
template <int kBK, int kDpad>
__device__ __forceinline__ void attn_warp_pv(float (*o)[4], float (*s)[4], const attn_t* v_s,
                                             int lane) {
    attn_warp_pv_mt<1, kBK, kDpad>(*reinterpret_cast<float (*)[1][kDpad / 8][4]>(o),
                                   *reinterpret_cast<float (*)[1][kBK / 8][4]>(s), v_s, lane);
}

// Sum the quad's partial row sums: after this every thread of the quad holds the full l.
__device__ __forceinline__ void attn_quad_sum(float l[2]) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
}

// Sum over the 32 lanes of a warp (a butterfly: every lane returns the total), for a row
// statistic that one warp computes with its lanes striding the columns (the backward's D_i).
// Full-mask shuffles: every lane of the warp must call it, not only the lanes that own data.
__device__ __forceinline__ float attn_warp_sum(float x) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
    return x;
}

// Write the warp's normalized rows O = acc / l (fp16) into its own 16 rows of the swizzled
// tile `dst_s` (rows wrow..wrow+15). Rows with l == 0 (no visible key) get zeros.
template <int kDpad>
__device__ __forceinline__ void attn_warp_o_to_smem(attn_t* dst_s, float (*o)[4], const float l[2],
                                                    int wrow, int lane) {
    constexpr int CPR = kDpad / 8;
    const float inv0 = l[0] > 0.f ? 1.f / l[0] : 0.f;
    const float inv1 = l[1] > 0.f ? 1.f / l[1] : 0.f;
    const int r0 = wrow + (lane >> 2);
#pragma unroll
    for (int n = 0; n < kDpad / 8; ++n) {
        const int col = n * 8 + 2 * (lane & 3);      // even column inside chunk n
        unsigned* p0 = reinterpret_cast<unsigned*>(dst_s + attn_swizzle(r0, n, CPR) + (col & 7));
        unsigned* p1 = reinterpret_cast<unsigned*>(dst_s + attn_swizzle(r0 + 8, n, CPR) + (col & 7));
        *p0 = attn_pack2(o[n][0] * inv0, o[n][1] * inv0);
        *p1 = attn_pack2(o[n][2] * inv1, o[n][3] * inv1);
    }
}

// ---- split-KV key ranges -----------------------------------------------------------------

// The keys of split `split` of n_splits: whole blocks of kBK keys dealt as the simulator's
// split_ranges (chunk s = blocks [s·blocks/n, (s+1)·blocks/n)), and the blocks a CTA whose
// last query row is r1 − 1 visits (causal, bottom-right aligned: none past its last visible
// key).
struct attn_split_keys { int k_lo, k_hi, n_blocks; };

template <int kBK>
__device__ __forceinline__ attn_split_keys attn_split_range(int split, int n_splits, int n_q,
                                                            int n_k, int r1, bool causal) {
    const int blocks = (n_k + kBK - 1) / kBK;
    const int k_lo = (int)((long long)split * blocks / n_splits) * kBK;
    const int k_hi = min(n_k, (int)((long long)(split + 1) * blocks / n_splits) * kBK);
    const int key_end = causal ? min(k_hi, max(0, min(n_k, r1 + n_k - n_q))) : k_hi;
    return attn_split_keys{k_lo, k_hi, key_end > k_lo ? (key_end - k_lo + kBK - 1) / kBK : 0};
}

// ---- split-KV combine --------------------------------------------------------------------

// Merge the n_splits partials of row i of one query head (flash-decoding): the thread owns
// output column `col` (< kDV) and, when col == 0, writes the row's lse.
//   lse = max_s lse_s + log Σ_s exp(lse_s − max), O = Σ_s exp(lse_s − lse) O_s
// o_part (·, n_splits, n_q, kDV) and lse_part (·, n_splits, n_q) fp32, head `bh`; o (·, n_q,
// kDV) storage type and lse (·, n_q) fp32. Splits that saw no key (lse -inf) weigh 0.
template <int kDV>
__device__ __forceinline__ void attn_combine_row(const float* o_part, const float* lse_part,
                                                 attn_t* o, float* lse, long long bh, int i,
                                                 int n_q, int n_splits, int col) {
    const long long base = bh * n_splits * n_q + i;             // split s at base + s·n_q
    float mx = ATTN_NEG_INF;
    for (int s = 0; s < n_splits; ++s) mx = fmaxf(mx, lse_part[base + (long long)s * n_q]);
    float total = 0.f, out = 0.f;
    if (mx != ATTN_NEG_INF) {
        for (int s = 0; s < n_splits; ++s) {
            const long long row = base + (long long)s * n_q;
            const float w = __expf(lse_part[row] - mx);
            total += w;
            if (col < kDV) out += w * o_part[row * kDV + col];
        }
    }
    const long long orow = bh * n_q + i;
    if (col < kDV) o[orow * kDV + col] = attn_from_f32(total > 0.f ? out / total : 0.f);
    if (col == 0) lse[orow] = total > 0.f ? mx + __logf(total) : ATTN_NEG_INF;
}

// Merge the rows of one combine CTA: head blockIdx.x, rows [blockIdx.y·kRows, +kRows) of
// its n_q (grid (B·H, ceil(n_q / kRows)), each row as attn_combine_row).
template <int kDV, int kRows>
__device__ __forceinline__ void attn_combine_rows(const float* o_part, const float* lse_part,
                                                  attn_t* o, float* lse, int n_q,
                                                  int n_splits) {
    const int last = min(n_q, (int)(blockIdx.y + 1) * kRows);
    for (int i = blockIdx.y * kRows; i < last; ++i)
        attn_combine_row<kDV>(o_part, lse_part, o, lse, blockIdx.x, i, n_q, n_splits,
                              threadIdx.x);
}
