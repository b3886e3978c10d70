// attn_gemm.cuh — the tiled tensor-core GEMM CTA shared by the ports' GEMM kernels
// (standard.cu's S = Q Kᵀ and O = P V, mla_decode.cu's per-head absorption GEMMs).
//
// One CTA computes a TILE_M x TILE_N tile of C = alpha · A op(B) with four warps in a 2 x 2
// layout, each a (TILE_M/2) x (TILE_N/2) fp32 accumulator of mma.sync.m16n8k16 fragments, and
// two shared-memory stages of TILE_K (the copy of stage t+1 overlaps the MMAs of stage t):
// 2 x (TILE_M + TILE_N) x TILE_K x 2 bytes of shared memory. The including source defines
// TILE_M, TILE_N, TILE_K (the plan's gemm tiles; defaults 128 x 128 x 32) before the include.
//
// A and C rows are addressed through attn_rows, so a GEMM can run over one head's rows of a
// (B, H, N, cols) tensor — rows b·N + i of head h live at ((b·H + h)·N + i)·cols — without a
// copy: group = N, gstride = H·N·cols, ld = cols, and the base pointer offset by h·N·cols.
#pragma once
#include "attn_common.cuh"

#ifndef TILE_M
#define TILE_M 128
#endif
#ifndef TILE_N
#define TILE_N 128
#endif
#ifndef TILE_K
#define TILE_K 32
#endif
#define GEMM_THREADS 128
#define WARP_M (TILE_M / 2)
#define WARP_N (TILE_N / 2)

static_assert(TILE_M % 32 == 0 && TILE_N % 32 == 0, "TILE_M, TILE_N: multiples of 32");
static_assert(TILE_K % 16 == 0, "TILE_K: a multiple of 16");

// The dynamic shared memory of a launch, declared once here (not inside gemm_cta) so that a
// source with GEMM kernels can also use it in its other kernels without a second, conflicting
// declaration.
extern __shared__ __align__(128) unsigned char smem_raw[];

// Rows of a matrix: `group` consecutive rows `ld` elements apart, groups `gstride` apart.
struct attn_rows { int group; long long gstride; int ld; };

__device__ __forceinline__ long long attn_row_offset(const attn_rows& m, int r) {
    return (long long)(r / m.group) * m.gstride + (long long)(r % m.group) * m.ld;
}
// A plain row-major matrix of `rows` rows, `ld` elements apart.
__device__ __forceinline__ attn_rows attn_dense_rows(int rows, int ld) {
    return attn_rows{rows > 0 ? rows : 1, 0, ld};
}

// Issue the copy of a kRows x (8 kCpr) window of a 16-bit matrix into stage `st` of `stages`,
// swizzled kRows x (8 kCpr) tiles back to back: stage row r is matrix row row0 + r (at mat +
// row_offset(row0 + r)), stage chunk ch its columns col0 + 8 ch .. + 7. Rows >= n_rows and
// chunks that start at or past n_cols are zero-filled; a chunk that starts below n_cols is
// copied whole (gemm_cta says why that is safe for A_TRANS). All GEMM_THREADS threads call it
// (`tid`: the thread's index); the caller commits the group.
template <int kRows, int kCpr, typename RowOffset>
__device__ __forceinline__ void gemm_load_slice_async(attn_t* stages, int st, const attn_t* mat,
                                                      RowOffset row_offset, int row0, int n_rows,
                                                      int col0, int n_cols, int tid) {
    for (int idx = tid; idx < kRows * kCpr; idx += GEMM_THREADS) {
        const int r = idx / kCpr, ch = idx % kCpr;
        const int gr = row0 + r, gc = col0 + ch * 8;
        const bool ok = gr < n_rows && gc < n_cols;
        // the stage offset is formed here in the loop, not passed in as a stage pointer: nvcc
        // then folds the caller's st ^ 1 into it otherwise, and every GEMM kernel's SASS changes
        attn_cp_async16(stages + st * (kRows * kCpr * 8) + attn_swizzle(r, ch, kCpr),
                        ok ? mat + row_offset(gr) + gc : mat, ok ? 16 : 0);
    }
}

// One GEMM CTA: C[tile] = alpha · A B for A (M x K, rows `am`) and B either (N x K)
// row-major (B_TRANS: C = A Bᵀ, as Q Kᵀ) or (K x N) row-major (C = A B, as P V), C (M x N,
// rows `cm`). Rows/columns past M, N, K are zero-filled on load and skipped on store.
// A_TRANS: A is given as its transpose, a (K x M) row-major matrix whose K rows are `am`
// (C = Xᵀ B, as the backward's Pᵀ dO and dSᵀ Q): the A stage is then TILE_K rows of TILE_M
// columns, read with ldmatrix.trans. Its 16-byte chunks start below M but may reach past it
// (into a row's padding): those columns only feed rows of C past M, which are not stored.
// Two shared-memory stages: the copy of stage t+1 overlaps the MMAs of stage t.
template <bool B_TRANS, bool A_TRANS = false>
__device__ __forceinline__ void gemm_cta(const attn_t* a, attn_rows am, const attn_t* b, int ldb,
                                         attn_t* c, attn_rows cm, int M, int N, int K,
                                         float alpha) {
    constexpr int A_STAGE = TILE_M * TILE_K;
    constexpr int B_STAGE = TILE_N * TILE_K;
    attn_t* a_s = reinterpret_cast<attn_t*>(smem_raw);            // [2][TILE_M][TILE_K] or [2][TILE_K][TILE_M]
    attn_t* b_s = a_s + 2 * A_STAGE;                             // [2][TILE_N][TILE_K] or [2][TILE_K][TILE_N]

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    const int wm = (warp >> 1) * WARP_M, wn = (warp & 1) * WARP_N;

    // Issue the copies of k-slice [k0, k0 + TILE_K) into stage `st` (one commit group): the A
    // stage is TILE_K rows of M (A_TRANS) or TILE_M rows of K, the B stage TILE_N rows of K
    // (B_TRANS) or TILE_K rows of N.
    const auto a_row = [&](int r) { return attn_row_offset(am, r); };
    const auto b_row = [&](int r) { return (long long)r * ldb; };
    auto load_stage = [&](int st, int k0) {
        if (A_TRANS) gemm_load_slice_async<TILE_K, TILE_M / 8>(a_s, st, a, a_row, k0, K, m0, M, tid);
        else         gemm_load_slice_async<TILE_M, TILE_K / 8>(a_s, st, a, a_row, m0, M, k0, K, tid);
        if (B_TRANS) gemm_load_slice_async<TILE_N, TILE_K / 8>(b_s, st, b, b_row, n0, N, k0, K, tid);
        else         gemm_load_slice_async<TILE_K, TILE_N / 8>(b_s, st, b, b_row, k0, K, n0, N, tid);
        attn_cp_async_commit();
    };

    float acc[WARP_M / 16][WARP_N / 8][4];
#pragma unroll
    for (int i = 0; i < WARP_M / 16; ++i)
#pragma unroll
        for (int j = 0; j < WARP_N / 8; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

    const int n_k_tiles = (K + TILE_K - 1) / TILE_K;
    load_stage(0, 0);
    for (int t = 0; t < n_k_tiles; ++t) {
        const int st = t & 1;
        if (t + 1 < n_k_tiles) load_stage(st ^ 1, (t + 1) * TILE_K);
        else attn_cp_async_commit();                           // keep the group count uniform
        attn_cp_async_wait<1>();
        __syncthreads();
        const attn_t* as = a_s + st * A_STAGE;
        const attn_t* bs = b_s + st * B_STAGE;
#pragma unroll
        for (int kk = 0; kk < TILE_K / 16; ++kk) {
            unsigned af[WARP_M / 16][4];
#pragma unroll
            for (int i = 0; i < WARP_M / 16; ++i) {
                if (A_TRANS) {
                    // stored matrices (k 0-7, m 0-7), (k 0-7, m 8-15), (k 8-15, m 0-7), ...:
                    // transposed, the A fragments (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15)
                    const int r = kk * 16 + (lane & 7) + (lane >> 4) * 8;
                    attn_ldmatrix_x4_trans(af[i], as + attn_swizzle(r, (wm + i * 16) / 8 + ((lane >> 3) & 1),
                                                                    TILE_M / 8));
                } else {
                    const int r = wm + i * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                    attn_ldmatrix_x4(af[i], as + attn_swizzle(r, kk * 2 + (lane >> 4), TILE_K / 8));
                }
            }
#pragma unroll
            for (int j = 0; j < WARP_N / 16; ++j) {
                unsigned bf[4];
                if (B_TRANS) {
                    const int r = wn + j * 16 + (lane & 7) + (lane >> 4) * 8;
                    attn_ldmatrix_x4(bf, bs + attn_swizzle(r, kk * 2 + ((lane >> 3) & 1), TILE_K / 8));
                } else {
                    const int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                    attn_ldmatrix_x4_trans(bf, bs + attn_swizzle(r, (wn + j * 16) / 8 + (lane >> 4), TILE_N / 8));
                }
#pragma unroll
                for (int i = 0; i < WARP_M / 16; ++i) {
                    attn_mma16816(acc[i][2 * j], af[i], bf[0], bf[1]);
                    attn_mma16816(acc[i][2 * j + 1], af[i], bf[2], bf[3]);
                }
            }
        }
        __syncthreads();                                       // stage st is free again
    }
    attn_cp_async_wait<0>();

    // -- store C = alpha · acc in fp16, two adjacent columns per 32-bit store --
#pragma unroll
    for (int i = 0; i < WARP_M / 16; ++i) {
#pragma unroll
        for (int j = 0; j < WARP_N / 8; ++j) {
            const int col = n0 + wn + j * 8 + 2 * (lane & 3);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int row = m0 + wm + i * 16 + (lane >> 2) + h * 8;
                if (row >= M || col >= N) continue;
                attn_t* dst = c + attn_row_offset(cm, row) + col;
                if (col + 1 < N)
                    *reinterpret_cast<unsigned*>(dst) =
                        attn_pack2(alpha * acc[i][j][2 * h], alpha * acc[i][j][2 * h + 1]);
                else
                    *dst = attn_from_f32(alpha * acc[i][j][2 * h]);
            }
        }
    }
}
