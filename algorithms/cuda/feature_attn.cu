// feature_attn.cu — feature-map ("kernelized") attention, the port of
// algorithms/kernels/feature_attention.py (the executor of linear, rfa and performer):
//   linear     Katharopoulos et al. 2020 (arXiv 2006.16236) §3.2, φ = elu + 1; §3.3 causal;
//   rfa        Peng et al. 2021 (arXiv 2103.02143) §2-3, φ = [sin, cos](W x̂ / σ);
//   performer  Choromanski et al. 2021 (arXiv 2009.14794) §2 FAVOR+, φ = exp(W u - |u|²/2).
//
// What it does: o_i = φ(q_i) S / φ(q_i) z with S = Σ_j φ(k_j) v_jᵀ (m x d), z = Σ_j φ(k_j),
// computed in feature slices of FEAT_UNITS units (projections; feature columns for elu + 1),
// exactly the simulator's kernels and CTAs:
//   feature_state    grid (T_m, B·H): one CTA per (head, slice) streams K, V in CHUNK-row
//                    tiles, builds φ(K) in shared memory and S_t += φ(K)ᵀ V, z_t += Σ φ(K)
//                    (fp32, in shared memory), then writes S_t, z_t (and its key shift) once.
//   feature_apply    grid (⌈N_q / CHUNK⌉, B·H): one CTA per Q tile walks the slices:
//                    W_t, S_t, z_t in, num += φ_t(Q) S_t, den += φ_t(Q) z_t; O = num / den.
//   feature_causal   grid (T_m, B·H): the chunked causal sweep (Katharopoulos §3.3's recurrence
//                    in chunks of C = CHUNK rows), one CTA per (head, slice); the state S, z
//                    stays in shared memory for the whole sweep. Per chunk: A = φ(Q_c) φ(K_c)ᵀ
//                    masked to key <= query (bottom-right aligned), num = φ(Q_c) S + A V_c,
//                    den = φ(Q_c) z + A 1, then S += φ(K_c)ᵀ V_c, z += Σ φ(K_c). Keys before
//                    the first query chunk's diagonal (N_k > N_q) are folded in first. T_m = 1
//                    writes O; T_m > 1 writes the slice's un-normalised num, den (and, positive
//                    features, their log-scale) in fp32 for
//   feature_combine  grid (⌈N_q / CHUNK⌉, B·H): O = Σ_t num_t e^{λ_t} / Σ_t den_t e^{λ_t}.
// Stabilisation (positive features) as the simulator: keys keep a running max c of their
// exponents (S, z rescaled by e^{c_old - c_new} when it grows), queries subtract their row max
// over the slice's projections; both cancel in num / den. Per-row factors 1/sqrt(P) of the
// random features are dropped (they cancel too): features stay near 1 in 16-bit storage.
//
// Tile sizes (compile-time defines from algorithms/ports/):
//   CHUNK      = plan.block (B: rows of a K/V/Q tile; the causal chunk length C); a multiple of 16.
//   HEAD_DIM   = d (a multiple of 8; the MMA k-step pads it to 16 with zero columns).
//   FEAT_KIND  = 0 elu + 1, 1 trig (RFA), 2 positive (Performer).
//   FEAT_UNITS = plan.tile_units: projections (feature columns for elu + 1) per slice; a slice
//                has FEAT_UNITS features (2 FEAT_UNITS for trig: a sin and a cos per projection),
//                padded to a multiple of 16 with zero features for the MMAs.
// Shared memory (dynamic, sizes in algorithms/ports/feature.py): 16-bit Q/K/V tiles CHUNK x HEAD_DIM, W_t
// FEAT_UNITS x HEAD_DIM, φ(Q), φ(K) CHUNK x m_t, fp32 S_t m_t x HEAD_DIM and z_t, as the plan
// counts (feature and row counts padded to 16), plus per-row scalars (and, positive, 1 / z_f
// and log z_f per feature); the apply kernel with
// several slices keeps its fp32 accumulator CHUNK x HEAD_DIM (the plan's O_acc) in shared
// memory. Differences from the plan: the causal A = φ(Q_c) φ(K_c)ᵀ (the plan's C² fp32 buffer)
// stays in registers, built FA_SUB keys at a time (same MMAs and traffic; see FA_SUB).
// HBM traffic equals the simulator's count: state: K, V once per slice, W_t once, S_t, z_t
// written once (fp32; the slice's shift when T_m > 1, positive); apply: Q once, W_t, S_t, z_t
// (and the shifts) once per Q tile, O once; causal: Q, K, V once per slice, W_t once, O once
// (T_m = 1) or the fp32 partials written once and read once by the combine kernel.
// Tensor cores: mma.sync.m16n8k16 (16-bit in, fp32 accumulate) with ldmatrix loads for every
// matmul the simulator counts (W u, A = φQ φKᵀ, A V, φQ S, φKᵀ V) — the plan's tc_path
// "mma_sync". Every 16-bit MMA operand that is not an input is scaled into fp16's range
// first, the scale undone in fp32: S (fp32 in shared memory) by a power of two (elu, trig)
// or row by row by 1 / z_f (positive: S_f / z_f is a weighted mean of V, with log z_f moved
// into φ(Q)'s exponent), A's rows by powers of two before A V (as FlashAttention's P <= 1).
// Performer's exponents span more e-folds than fp16 holds (logits of a few units suffice):
// each key's features are taken relative to its own max, its weight g_j = e^{c_j - c}
// (fp32) scales A's columns, V's rows in φ(K)ᵀ (g V) (times a power of two) and z; queries
// relative to their row max. Performer's W u needs a max before the exp, so it is computed
// twice (max pass, exp pass) — three times for the causal queries, whose φ(Q) is rebuilt
// with log z for φ(Q) S: more projection MMAs than the simulator counts.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t).
#include "attn_common.cuh"

#ifndef CHUNK
#define CHUNK 64
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef FEAT_KIND
#define FEAT_KIND 0
#endif
#ifndef FEAT_UNITS
#define FEAT_UNITS HEAD_DIM
#endif

#define FA_THREADS 128
#define FA_WARPS (FA_THREADS / 32)
#define DP ATTN_PAD16(HEAD_DIM)
#define KT (DP / 16)                                 // MMA k-steps over head_dim
#define RANDOM (FEAT_KIND != 0)
#define PER (FEAT_KIND == 1 ? 2 : 1)                 // features per unit
#define UP ATTN_PAD16(FEAT_UNITS)                    // W_t rows in shared memory
#define MP ATTN_PAD16(FEAT_UNITS * PER)              // features of a slice, padded
#define RT (CHUNK / 16)                              // 16-row tiles of a chunk
// Positive features are stored times 2^14: exp(E - max) spans many e-folds, and the bias
// keeps 10 more of them above fp16's smallest normal (it cancels in num / den).
#define FA_PHI_BIAS (FEAT_KIND == 2 ? 16384.f : 1.f)
// Keys of the causal A = φ(Q_c) φ(K_c)ᵀ a warp holds in registers at a time: the largest
// multiple of 16 dividing CHUNK with FA_SUB x DP <= 2048, so that A's FA_SUB / 2 fp32
// registers fit beside num's DP / 2: 64 keys at d = 32, 32 at d = 64, 16 at d = 128. Whole
// 128-key chunks at d = 128 (64 + 64 registers) spilled up to 812 bytes (nvcc 13.0, sm_80);
// 4096 (32 keys at d = 128) still spilled 8-20 bytes.
constexpr int fa_sub_keys() {
    int s = CHUNK;
    while (s > 16 && (s * DP > 2048 || CHUNK % s != 0)) s -= 16;
    return s;
}
constexpr int kFaSubKeys = fa_sub_keys();         // evaluated by the host compiler
#define FA_SUB kFaSubKeys

static_assert(CHUNK % 16 == 0 && CHUNK <= 128, "CHUNK must be a multiple of 16, <= 128");
static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");
static_assert(FEAT_KIND >= 0 && FEAT_KIND <= 2, "FEAT_KIND is 0 (elu), 1 (trig), 2 (positive)");
static_assert(FEAT_KIND != 0 || FEAT_UNITS <= HEAD_DIM, "elu + 1 slices the head_dim columns");

// ---- small helpers -------------------------------------------------------------------------

__device__ __forceinline__ float fa_get(const attn_t* t, int r, int c, int cpr) {
    return attn_to_f32(t[attn_swizzle(r, c >> 3, cpr) + (c & 7)]);
}
__device__ __forceinline__ void fa_put(attn_t* t, int r, int c, int cpr, float v) {
    t[attn_swizzle(r, c >> 3, cpr) + (c & 7)] = attn_from_f32(v);
}
__device__ __forceinline__ float fa_quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float fa_quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float fa_warp_max(float x) {
#pragma unroll
    for (int s = 1; s < 32; s *= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, s));
    return x;
}
// Largest value over the CTA; every thread gets it. red_s: FA_WARPS floats.
__device__ __forceinline__ float fa_cta_max(float x, float* red_s, int tid) {
    x = fa_warp_max(x);
    __syncthreads();                                       // red_s free (previous use done)
    if ((tid & 31) == 0) red_s[tid >> 5] = x;
    __syncthreads();
    float m = red_s[0];
#pragma unroll
    for (int w = 1; w < FA_WARPS; ++w) m = fmaxf(m, red_s[w]);
    return m;
}

// Power-of-two factor that brings S's largest magnitude into [0.5, 1) for its 16-bit MMA
// operand (S sums up to N keys: it can exceed fp16's range, or sit far below it). Whole CTA.
__device__ __forceinline__ float fa_state_mul(const float* s_s, float* red_s, int tid) {
    float mx = 0.f;
    for (int i = tid; i < MP * HEAD_DIM; i += FA_THREADS) mx = fmaxf(mx, fabsf(s_s[i]));
    mx = fa_cta_max(mx, red_s, tid);
    // (clamped: a state of fp32 subnormals would give an infinite factor, and 0 x inf = NaN)
    return mx > 0.f ? exp2f(fminf(-(floorf(log2f(mx)) + 1.f), 64.f)) : 1.f;
}

// A fragments of a 16-row tile (rows wrow..wrow+15) of a swizzled [rows][DP] input tile,
// kept in registers while the projections are computed 16 columns at a time.
__device__ __forceinline__ void fa_load_rows_a(unsigned (&a)[KT][4], const attn_t* x_s,
                                               int wrow, int lane) {
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
        const int arow = wrow + (lane & 7) + ((lane >> 3) & 1) * 8;
        attn_ldmatrix_x4(a[kk], x_s + attn_swizzle(arow, kk * 2 + (lane >> 4), DP / 8));
    }
}

// p = X W_tᵀ for the tile's 16 rows and projections col0..col0+15 (W_t rows, [UP][DP]).
// p[j][0..1]: row lane/4, columns col0 + 8 j + 2 (lane % 4) + 0/1; p[j][2..3]: row + 8.
__device__ __forceinline__ void fa_project16(float (&p)[2][4], const unsigned (&a)[KT][4],
                                             const attn_t* w_s, int col0, int lane) {
#pragma unroll
    for (int j = 0; j < 2; ++j) p[j][0] = p[j][1] = p[j][2] = p[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
        unsigned b[4];
        const int krow = col0 + (lane & 7) + (lane >> 4) * 8;
        attn_ldmatrix_x4(b, w_s + attn_swizzle(krow, kk * 2 + ((lane >> 3) & 1), DP / 8));
        attn_mma16816(p[0], a[kk], b[0], b[1]);
        attn_mma16816(p[1], a[kk], b[2], b[3]);
    }
}

// |x|² of the thread's two rows (lane/4 and lane/4 + 8 of the tile at wrow), quad-reduced.
__device__ __forceinline__ void fa_row_norms2(float (&n2)[2], const attn_t* x_s, int wrow,
                                              int lane) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = wrow + (lane >> 2) + 8 * h;
        float s = 0.f;
        for (int c = lane & 3; c < HEAD_DIM; c += 4) {
            const float x = fa_get(x_s, r, c, DP / 8);
            s = fmaf(x, x, s);
        }
        n2[h] = fa_quad_sum(s);
    }
}

// ---- φ of a tile ---------------------------------------------------------------------------
// Builds phi_s ([CHUNK][MP], swizzled) from the input tile x_s ([CHUNK][DP]) for slice units
// [u0, u0 + nu) and rows < valid (other rows and padded features are 0). Called by the whole
// CTA. Positive keys: *shift is the running max of the exponents, updated (the return value
// is the factor e^{c_old - c_new} to apply to S, z), and the keys' weights g go to mx_out;
// positive queries: row references (max of W u over the slice, at least mx_in[r] when
// mx_in is given) go to mx_out.
struct FaArgs {
    int u0, nu, valid;
    float in_scale;
    const float* lz = nullptr;     // positive queries: per-feature log z added to the exponent
};

// Positive query features of one 16-row tile (warp): φ = exp(E + lz - ref) x bias with
// E = in_scale (W x) and ref = max(prev, row max of E + lz) (returned in ref, quad-shared).
// Writes only the tile's valid entries (the caller zeroed the rest).
__device__ void fa_query_tile(attn_t* phi_s, const attn_t* x_s, const attn_t* w_s, FaArgs f,
                              int wrow, const float (&prev)[2], float (&ref)[2], int lane) {
    unsigned a[KT][4];
    fa_load_rows_a(a, x_s, wrow, lane);
    for (int pass = 0; pass < 2; ++pass) {
        float rmax[2] = {ATTN_NEG_INF, ATTN_NEG_INF};
        for (int col0 = 0; col0 < f.nu; col0 += 16) {
            float p[2][4];
            fa_project16(p, a, w_s, col0, lane);
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int h = e >> 1;
                    const int r = wrow + (lane >> 2) + h * 8;
                    const int c = col0 + 8 * j + 2 * (lane & 3) + (e & 1);
                    if (c >= f.nu || r >= f.valid) continue;
                    const float ex = p[j][e] * f.in_scale + (f.lz ? f.lz[c] : 0.f);
                    if (pass == 0) rmax[h] = fmaxf(rmax[h], ex);
                    else fa_put(phi_s, r, c, MP / 8,
                                ref[h] == ATTN_NEG_INF ? 0.f : expf(ex - ref[h]) * FA_PHI_BIAS);
                }
        }
        if (pass == 0)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = wrow + (lane >> 2) + 8 * h;
                // a row past `valid` keeps 0 (no exponent to take)
                const float m = fa_quad_max(rmax[h]);     // (all lanes: a shuffle)
                ref[h] = r < f.valid ? fmaxf(prev[h], m) : 0.f;
            }
    }
}

__device__ __forceinline__ float fa_elu1(float x) { return x > 0.f ? x + 1.f : expf(fminf(x, 0.f)); }

template <bool kKey>
__device__ float fa_features(attn_t* phi_s, const attn_t* x_s, const attn_t* w_s, FaArgs f,
                             float* shift, const float* mx_in, float* mx_out, float* red_s,
                             int tid) {
    const int warp = tid >> 5, lane = tid & 31;
    constexpr int FCPR = MP / 8;
    float factor = 1.f;
    // zero this warp's rows first: padded features and rows past `valid` stay 0
    for (int rt = warp; rt < RT; rt += FA_WARPS)
        for (int idx = lane; idx < 16 * MP; idx += 32)
            fa_put(phi_s, rt * 16 + idx / MP, idx % MP, FCPR, 0.f);
    __syncwarp();
#if FEAT_KIND == 0
    (void)w_s; (void)shift; (void)mx_in; (void)mx_out; (void)red_s;
    for (int rt = warp; rt < RT; rt += FA_WARPS)
        for (int idx = lane; idx < 16 * f.nu; idx += 32) {
            const int r = rt * 16 + idx / f.nu, c = idx % f.nu;
            if (r < f.valid) fa_put(phi_s, r, c, FCPR, fa_elu1(fa_get(x_s, r, f.u0 + c, DP / 8)));
        }
#elif FEAT_KIND == 1
    (void)shift; (void)mx_in; (void)mx_out; (void)red_s;
    for (int rt = warp; rt < RT; rt += FA_WARPS) {
        const int wrow = rt * 16;
        float n2[2], inv[2];
        fa_row_norms2(n2, x_s, wrow, lane);
        // u = x / (|x| σ); a zero row projects to 0 whatever the factor (as the simulator)
#pragma unroll
        for (int h = 0; h < 2; ++h) inv[h] = n2[h] > 0.f ? f.in_scale / sqrtf(n2[h]) : 0.f;
        unsigned a[KT][4];
        fa_load_rows_a(a, x_s, wrow, lane);
        for (int col0 = 0; col0 < f.nu; col0 += 16) {
            float p[2][4];
            fa_project16(p, a, w_s, col0, lane);
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = wrow + (lane >> 2) + (e >> 1) * 8;
                    const int c = col0 + 8 * j + 2 * (lane & 3) + (e & 1);
                    if (c < f.nu && r < f.valid) {
                        const float pr = p[j][e] * inv[e >> 1];
                        fa_put(phi_s, r, c, FCPR, sinf(pr));
                        fa_put(phi_s, r, f.nu + c, FCPR, cosf(pr));
                    }
                }
        }
    }
#else
    // exponent E = in_scale (W x) [- in_scale² |x|² / 2 for keys]; pass 1: the row maxima,
    // pass 2: φ = exp(E - row max) x bias. Queries (fa_query_tile): the row max cancels in
    // num / den. Keys: each key's own max c_j keeps its features in fp16's range, and its
    // weight g_j = e^{c_j - c} relative to the running shift c (mx_out, fp32) is applied where
    // the keys are summed: A's columns, V's rows in S += φ(K)ᵀ (g V), z += Σ g φ(K).
    if (!kKey) {
        for (int rt = warp; rt < RT; rt += FA_WARPS) {
            const int wrow = rt * 16;
            float prev[2], ref[2];
#pragma unroll
            for (int h = 0; h < 2; ++h)
                prev[h] = mx_in ? mx_in[wrow + (lane >> 2) + 8 * h] : ATTN_NEG_INF;
            fa_query_tile(phi_s, x_s, w_s, f, wrow, prev, ref, lane);
            __syncwarp();                                  // the quad read mx_in above
            if ((lane & 3) == 0)
#pragma unroll
                for (int h = 0; h < 2; ++h) mx_out[wrow + (lane >> 2) + 8 * h] = ref[h];
        }
        __syncwarp();
        return factor;
    }
    const float half_s2 = 0.5f * f.in_scale * f.in_scale;
    float kmax = ATTN_NEG_INF;
    for (int pass = 0; pass < 2; ++pass) {
        float c = 0.f;
        if (pass == 1) {
            const float c_new = fa_cta_max(kmax, red_s, tid);
            const float c_old = *shift;                     // (every thread holds a copy)
            c = fmaxf(c_old, c_new);
            factor = (c_old == ATTN_NEG_INF || c == c_old) ? 1.f : expf(c_old - c);
            *shift = c;
        }
        for (int rt = warp; rt < RT; rt += FA_WARPS) {
            const int wrow = rt * 16;
            float n2[2];
            fa_row_norms2(n2, x_s, wrow, lane);
            float ref[2] = {0.f, 0.f};
            if (pass == 1)
#pragma unroll
                for (int h = 0; h < 2; ++h) ref[h] = mx_out[wrow + (lane >> 2) + 8 * h];
            float rmax[2] = {ATTN_NEG_INF, ATTN_NEG_INF};
            unsigned a[KT][4];
            fa_load_rows_a(a, x_s, wrow, lane);
            for (int col0 = 0; col0 < f.nu; col0 += 16) {
                float p[2][4];
                fa_project16(p, a, w_s, col0, lane);
#pragma unroll
                for (int j = 0; j < 2; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int h = e >> 1;
                        const int r = wrow + (lane >> 2) + h * 8;
                        const int c = col0 + 8 * j + 2 * (lane & 3) + (e & 1);
                        if (c >= f.nu || r >= f.valid) continue;
                        const float ex = fmaf(p[j][e], f.in_scale, -half_s2 * n2[h]);
                        if (pass == 0) rmax[h] = fmaxf(rmax[h], ex);
                        else fa_put(phi_s, r, c, FCPR, expf(ex - ref[h]) * FA_PHI_BIAS);
                    }
            }
            __syncwarp();                                  // the quad read mx_out above
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = wrow + (lane >> 2) + 8 * h;
                if (pass == 0) {
                    const float m = fa_quad_max(rmax[h]);
                    kmax = fmaxf(kmax, m);
                    if ((lane & 3) == 0) mx_out[r] = r < f.valid ? m : 0.f;       // c_r
                } else if ((lane & 3) == 0) {
                    mx_out[r] = r < f.valid ? expf(ref[h] - c) : 0.f;              // g_r
                }
            }
        }
        __syncwarp();                                      // mx_out rows are the warp's own
    }
#endif
    return factor;
}

// ---- state pieces --------------------------------------------------------------------------

// S_s (fp32 [MP][HEAD_DIM]) += φ(K)ᵀ V and z_s += Σ φ(K) over the CHUNK rows of phik_s, v_s
// (rows past the valid keys are zero in both). Warps own disjoint 16-feature row tiles of S.
// Positive features: key r's row of φ(K) is relative to its own max; g_s[r] (fp32) is its
// weight, applied to V's rows in the MMA's B operand and to φ(K) in z.
__device__ void fa_state_update(float* s_s, float* z_s, const attn_t* phik_s, const attn_t* v_s,
                                const float* g_s, float* red_s, int tid) {
    const int warp = tid >> 5, lane = tid & 31;
    // positive: g V is rounded to 16 bits, times a power of two that brings its largest entry
    // into [2^14, 2^15) (the keys' weights g span many e-folds below 1: the headroom up to
    // fp16's maximum keeps more of them above its smallest normal), S += product / that
    float gv_mul = 1.f;
    if (FEAT_KIND == 2) {
        float mx = 0.f;
        for (int i = tid; i < CHUNK * HEAD_DIM; i += FA_THREADS)
            mx = fmaxf(mx, fabsf(fa_get(v_s, i / HEAD_DIM, i % HEAD_DIM, DP / 8)) * g_s[i / HEAD_DIM]);
        mx = fa_cta_max(mx, red_s, tid);
        gv_mul = mx > 0.f ? exp2f(fminf(14.f - floorf(log2f(mx)), 126.f)) : 1.f;
    }
    const float gv_back = 1.f / gv_mul;
    for (int ft = warp; ft < MP / 16; ft += FA_WARPS) {
        float acc[DP / 8][4];
#pragma unroll
        for (int n = 0; n < DP / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < CHUNK / 16; ++kk) {
            unsigned a[4];
            // A = φ(K)ᵀ (features x keys) from the [keys][features] tile: transposed matrices
            // (keys 0-7, f 0-7), (keys 0-7, f 8-15), (keys 8-15, f 0-7), (keys 8-15, f 8-15)
            const int krow = kk * 16 + (lane & 7) + (lane >> 4) * 8;
            attn_ldmatrix_x4_trans(a, phik_s + attn_swizzle(krow, ft * 2 + ((lane >> 3) & 1), MP / 8));
#pragma unroll
            for (int n = 0; n < DP / 16; ++n) {
                unsigned b[4];
                const int vrow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                attn_ldmatrix_x4_trans(b, v_s + attn_swizzle(vrow, n * 2 + (lane >> 4), DP / 8));
                if (FEAT_KIND == 2) {
                    // b[0], b[2]: keys 2t, 2t + 1 of the k-step; b[1], b[3]: keys 2t + 8, + 9
                    const int k0 = kk * 16 + 2 * (lane & 3);
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const int kr = k0 + (i & 1) * 8;
                        const attn_f2 x = attn_unpack2(b[i]);
                        b[i] = attn_pack2(x.x * (g_s[kr] * gv_mul), x.y * (g_s[kr + 1] * gv_mul));
                    }
                }
                attn_mma16816(acc[2 * n], a, b[0], b[1]);
                attn_mma16816(acc[2 * n + 1], a, b[2], b[3]);
            }
        }
        const int f0 = ft * 16 + (lane >> 2);
#pragma unroll
        for (int n = 0; n < DP / 8; ++n) {
            const int col = n * 8 + 2 * (lane & 3);
            if (col < HEAD_DIM) {
                s_s[f0 * HEAD_DIM + col] += acc[n][0] * gv_back;
                s_s[f0 * HEAD_DIM + col + 1] += acc[n][1] * gv_back;
                s_s[(f0 + 8) * HEAD_DIM + col] += acc[n][2] * gv_back;
                s_s[(f0 + 8) * HEAD_DIM + col + 1] += acc[n][3] * gv_back;
            }
        }
    }
    for (int f = tid; f < MP; f += FA_THREADS) {
        float s = 0.f;
        for (int r = 0; r < CHUNK; ++r)
            s += FEAT_KIND == 2 ? fa_get(phik_s, r, f, MP / 8) * g_s[r] : fa_get(phik_s, r, f, MP / 8);
        z_s[f] += s;
    }
}

// S, z *= factor (positive features: the key shift grew). All threads; caller syncs.
__device__ __forceinline__ void fa_rescale_state(float* s_s, float* z_s, float factor, int tid) {
    if (factor == 1.f) return;
    for (int i = tid; i < MP * HEAD_DIM; i += FA_THREADS) s_s[i] *= factor;
    for (int i = tid; i < MP; i += FA_THREADS) z_s[i] *= factor;
}

// o[DP/8][4] += φ(Q) S for the warp's 16 rows at wrow; den[2] = φ(Q) z (fp32,
// quad-reduced) for the thread's two rows. S (fp32) is rounded to 16 bits for the MMA's B
// operand: kNorm (positive features): row f multiplied by z_s[f] = 1 / z_f — S_f / z_f is a
// weighted mean of V rows, in fp16's range however far apart the features' magnitudes are
// (φ(Q) then carries log z_f, see fa_query_tile) — and den = Σ φ(Q); otherwise S x s_mul (a
// power of two bringing its largest entry into [0.5, 1)), the product multiplied back.
template <bool kNorm>
__device__ __forceinline__ void fa_apply_state(float (&o)[DP / 8][4], float (&den)[2],
                                               const attn_t* phiq_s, const float* s_s,
                                               const float* z_s, float s_mul, int wrow, int lane) {
    const int g = lane >> 2, t = lane & 3;
    const float back = kNorm ? 1.f : 1.f / s_mul;
#pragma unroll
    for (int n = 0; n < DP / 8; ++n) {                     // o is accumulated in S's scale
        o[n][0] *= s_mul; o[n][1] *= s_mul; o[n][2] *= s_mul; o[n][3] *= s_mul;
    }
    for (int kk = 0; kk < MP / 16; ++kk) {
        unsigned a[4];
        const int arow = wrow + (lane & 7) + ((lane >> 3) & 1) * 8;
        attn_ldmatrix_x4(a, phiq_s + attn_swizzle(arow, kk * 2 + (lane >> 4), MP / 8));
        const int f0 = kk * 16 + 2 * t;
        const float* s0 = s_s + f0 * HEAD_DIM;
        const float m0 = kNorm ? z_s[f0] : s_mul, m1 = kNorm ? z_s[f0 + 1] : s_mul;
        const float m8 = kNorm ? z_s[f0 + 8] : s_mul, m9 = kNorm ? z_s[f0 + 9] : s_mul;
#pragma unroll
        for (int n = 0; n < DP / 8; ++n) {
            const int col = n * 8 + g;
            unsigned b0 = 0u, b1 = 0u;
            if (col < HEAD_DIM) {
                b0 = attn_pack2(s0[col] * m0, s0[HEAD_DIM + col] * m1);
                b1 = attn_pack2(s0[8 * HEAD_DIM + col] * m8, s0[9 * HEAD_DIM + col] * m9);
            }
            attn_mma16816(o[n], a, b0, b1);
        }
    }
#pragma unroll
    for (int n = 0; n < DP / 8; ++n) {
        o[n][0] *= back; o[n][1] *= back; o[n][2] *= back; o[n][3] *= back;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = wrow + g + 8 * h;
        float s = 0.f;
        for (int f = t; f < MP; f += 4)
            s = kNorm ? s + fa_get(phiq_s, r, f, MP / 8) : fmaf(fa_get(phiq_s, r, f, MP / 8), z_s[f], s);
        den[h] = fa_quad_sum(s);
    }
}

// Positive features: iz_s[f] = 1 / z_f and lz_s[f] = log z_f + lz_add (-inf, 0 when z_f <= 0)
// for the normalised φ(Q) S of fa_apply_state<true>. Whole CTA; caller syncs.
__device__ __forceinline__ void fa_norm_state(float* iz_s, float* lz_s, const float* z_s,
                                              float lz_add, int tid) {
    for (int f = tid; f < MP; f += FA_THREADS) {
        const float z = z_s[f];
        iz_s[f] = z > 0.f ? 1.f / z : 0.f;
        lz_s[f] = z > 0.f ? logf(z) + lz_add : ATTN_NEG_INF;
    }
}

// Write the thread's fragment of num / den (rows row0 + lane/4 (+8), 2 columns per n) to a
// (n_rows x HEAD_DIM) 16-bit matrix; den == 0 (no visible key) gives 0.
__device__ __forceinline__ void fa_store_out(attn_t* o, const float (&num)[DP / 8][4],
                                             const float (&den)[2], int row0, int n_rows,
                                             int lane) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = row0 + (lane >> 2) + 8 * h;
        if (r >= n_rows) continue;
        // (a division, not a reciprocal: 1 / den overflows for an fp32-subnormal den)
        const float dv = den[h];
#pragma unroll
        for (int n = 0; n < DP / 8; ++n) {
            const int col = n * 8 + 2 * (lane & 3);
            if (col < HEAD_DIM)
                *reinterpret_cast<unsigned*>(o + (long long)r * HEAD_DIM + col) =
                    attn_pack2(dv != 0.f ? num[n][2 * h] / dv : 0.f,
                               dv != 0.f ? num[n][2 * h + 1] / dv : 0.f);
        }
    }
}

// Copy W_t (the slice's rows of W, row-major (P x d) 16-bit) into w_s, zero-filling rows >= nu.
__device__ __forceinline__ void fa_load_w(attn_t* w_s, const attn_t* w, int u0, int nu, int tid) {
#if RANDOM
    attn_load_tile_async<UP, DP, FA_THREADS>(w_s, w + (long long)u0 * HEAD_DIM, 0, nu, HEAD_DIM, tid);
#else
    (void)w_s; (void)w; (void)u0; (void)nu; (void)tid;
#endif
}

__device__ __forceinline__ int fa_kv_head(int bh, int heads, int kv_group) {
    return (bh / heads) * (heads / kv_group) + (bh % heads) / kv_group;
}

// Shared-memory carve-up: each kernel takes the tiles it uses, in this order.
struct FaSmem {
    attn_t *x0, *x1, *x2, *w, *phi0, *phi1;
    float *s, *z, *row0, *row1, *red, *oacc, *iz, *lz;
};
__device__ __forceinline__ char* fa_take(char*& p, int bytes) {
    char* q = p;
    p += (bytes + 15) / 16 * 16;
    return q;
}

// ---- kernels -------------------------------------------------------------------------------

// Keys [c0, c1) of the head: K, V tiles -> φ(K) -> (rescale) -> S, z. Whole CTA.
__device__ void fa_fold_keys(FaSmem& sm, const attn_t* k_h, const attn_t* v_h, int c0, int c1,
                             FaArgs f, float* shift, int tid) {
    attn_load_tile_async<CHUNK, DP, FA_THREADS>(sm.x1, k_h, c0, c1, HEAD_DIM, tid);
    attn_load_tile_async<CHUNK, DP, FA_THREADS>(sm.x2, v_h, c0, c1, HEAD_DIM, tid);
    attn_cp_async_commit();
    attn_cp_async_wait<0>();
    __syncthreads();
    f.valid = c1 - c0;
    const float factor = fa_features<true>(sm.phi1, sm.x1, sm.w, f, shift, nullptr, sm.row0,
                                           sm.red, tid);
    fa_rescale_state(sm.s, sm.z, factor, tid);
    __syncthreads();
    fa_state_update(sm.s, sm.z, sm.phi1, sm.x2, sm.row0, sm.red, tid);
    __syncthreads();                                       // K, V, φ(K) free for the next tile
}

// k, v (B, G, n_k, d); w (P, d) shared by all heads or (B·H, P, d) when w_per_head;
// s_out (B·H, m, d) fp32, z_out (B·H, m) fp32 (the slice's rows at f0 = PER u0);
// shift_out (B·H, T_m) fp32 (written when T_m > 1, positive features).
extern "C" __global__ void __launch_bounds__(FA_THREADS, 1)
feature_state(const attn_t* __restrict__ k, const attn_t* __restrict__ v,
              const attn_t* __restrict__ w, float* __restrict__ s_out, float* __restrict__ z_out,
              float* __restrict__ shift_out, int n_k, int heads, int kv_group, float in_scale,
              int w_per_head, int total_units, int m_total) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const int tid = threadIdx.x, t = blockIdx.x, tiles = gridDim.x, bh = blockIdx.y;
    char* p = reinterpret_cast<char*>(smem_raw);
    FaSmem sm{};
    sm.x1 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * DP * 2));
    sm.x2 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * DP * 2));
    if (RANDOM) sm.w = reinterpret_cast<attn_t*>(fa_take(p, UP * DP * 2));
    sm.phi1 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * MP * 2));
    sm.s = reinterpret_cast<float*>(fa_take(p, MP * HEAD_DIM * 4));
    sm.z = reinterpret_cast<float*>(fa_take(p, MP * 4));
    sm.row0 = reinterpret_cast<float*>(fa_take(p, CHUNK * 4));   // key weights (positive)
    sm.red = reinterpret_cast<float*>(fa_take(p, FA_WARPS * 4));
    FaArgs f{t * FEAT_UNITS, min(FEAT_UNITS, total_units - t * FEAT_UNITS), 0, in_scale};
    fa_load_w(sm.w, w + (w_per_head ? (long long)bh * total_units * HEAD_DIM : 0), f.u0, f.nu, tid);
    for (int i = tid; i < MP * HEAD_DIM; i += FA_THREADS) sm.s[i] = 0.f;
    for (int i = tid; i < MP; i += FA_THREADS) sm.z[i] = 0.f;
    float shift = ATTN_NEG_INF;                            // running key shift (per thread)
    const long long kv = (long long)fa_kv_head(bh, heads, kv_group) * n_k * HEAD_DIM;
    for (int c0 = 0; c0 < n_k; c0 += CHUNK)
        fa_fold_keys(sm, k + kv, v + kv, c0, min(c0 + CHUNK, n_k), f, &shift, tid);
    if (n_k == 0) {                                        // W's copy must land anyway
        attn_cp_async_commit();
        attn_cp_async_wait<0>();
        __syncthreads();
    }
    const int m_t = f.nu * PER, f0 = f.u0 * PER;
    float* s_h = s_out + ((long long)bh * m_total + f0) * HEAD_DIM;
    for (int i = tid; i < m_t * HEAD_DIM; i += FA_THREADS) s_h[i] = sm.s[i];
    for (int i = tid; i < m_t; i += FA_THREADS) z_out[(long long)bh * m_total + f0 + i] = sm.z[i];
    if (FEAT_KIND == 2 && tiles > 1 && tid == 0)
        shift_out[(long long)bh * tiles + t] = shift;
}

// q (B, H, n_q, d) -> o; S, z (and shifts) from feature_state. Grid (⌈n_q / CHUNK⌉, B·H).
extern "C" __global__ void __launch_bounds__(FA_THREADS, 1)
feature_apply(const attn_t* __restrict__ q, const attn_t* __restrict__ w,
              const float* __restrict__ s_in, const float* __restrict__ z_in,
              const float* __restrict__ shift_in, attn_t* __restrict__ o, int n_q, int n_k,
              float in_scale, int w_per_head, int tiles, int total_units, int m_total) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, bh = blockIdx.y;
    const int row0 = blockIdx.x * CHUNK, rows = min(CHUNK, n_q - row0);
    char* p = reinterpret_cast<char*>(smem_raw);
    FaSmem sm{};
    sm.x0 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * DP * 2));
    if (RANDOM) sm.w = reinterpret_cast<attn_t*>(fa_take(p, UP * DP * 2));
    sm.phi0 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * MP * 2));
    sm.s = reinterpret_cast<float*>(fa_take(p, MP * HEAD_DIM * 4));
    sm.z = reinterpret_cast<float*>(fa_take(p, MP * 4));
    sm.row0 = reinterpret_cast<float*>(fa_take(p, CHUNK * 4));   // running row max (old)
    sm.row1 = reinterpret_cast<float*>(fa_take(p, CHUNK * 4));   // row max (new)
    sm.red = reinterpret_cast<float*>(fa_take(p, FA_WARPS * 4));
    if (FEAT_KIND == 2) {
        sm.iz = reinterpret_cast<float*>(fa_take(p, MP * 4));
        sm.lz = reinterpret_cast<float*>(fa_take(p, MP * 4));
    }
    if (tiles > 1) {
        sm.oacc = reinterpret_cast<float*>(fa_take(p, CHUNK * HEAD_DIM * 4));
        for (int i = tid; i < CHUNK * HEAD_DIM; i += FA_THREADS) sm.oacc[i] = 0.f;
    }
    const attn_t* q_h = q + (long long)bh * n_q * HEAD_DIM;
    const attn_t* w_h = w + (w_per_head ? (long long)bh * total_units * HEAD_DIM : 0);
    attn_load_tile_async<CHUNK, DP, FA_THREADS>(sm.x0, q_h, row0, n_q, HEAD_DIM, tid);
    attn_cp_async_commit();
    float top = 0.f;                                       // the slices' common key shift
    const bool sliced = FEAT_KIND == 2 && tiles > 1;
    if (sliced) {
        top = ATTN_NEG_INF;
        for (int t = 0; t < tiles; ++t) top = fmaxf(top, shift_in[(long long)bh * tiles + t]);
    }
    for (int r = tid; r < CHUNK; r += FA_THREADS) sm.row0[r] = ATTN_NEG_INF;
    float den_acc[RT][2];                                  // (tiles > 1) the thread's rows' den
#pragma unroll
    for (int i = 0; i < RT; ++i) den_acc[i][0] = den_acc[i][1] = 0.f;
    for (int t = 0; t < tiles; ++t) {
        FaArgs f{t * FEAT_UNITS, min(FEAT_UNITS, total_units - t * FEAT_UNITS), rows, in_scale};
        const int m_t = f.nu * PER, f0 = f.u0 * PER;
        __syncthreads();                                   // previous slice's W, S, φ(Q) consumed
        fa_load_w(sm.w, w_h, f.u0, f.nu, tid);
        attn_cp_async_commit();
        const float* s_h = s_in + ((long long)bh * m_total + f0) * HEAD_DIM;
        for (int i = tid; i < MP * HEAD_DIM; i += FA_THREADS)
            sm.s[i] = i < m_t * HEAD_DIM ? s_h[i] : 0.f;
        for (int i = tid; i < MP; i += FA_THREADS)
            sm.z[i] = i < m_t ? z_in[(long long)bh * m_total + f0 + i] : 0.f;
        attn_cp_async_wait<0>();
        __syncthreads();
        float s_mul = 1.f;
        if (FEAT_KIND == 2) {
            // S_t, z_t are relative to the slice's key shift: bring them to the common one
            // through log z (S_t / z_t is invariant)
            fa_norm_state(sm.iz, sm.lz, sm.z, sliced ? shift_in[(long long)bh * tiles + t] - top : 0.f, tid);
            __syncthreads();
            f.lz = sm.lz;
        } else {
            s_mul = fa_state_mul(sm.s, sm.red, tid);
        }
        fa_features<false>(sm.phi0, sm.x0, sm.w, f, nullptr, sm.row0, sm.row1, sm.red, tid);
        __syncthreads();
        for (int rt = warp; rt < RT; rt += FA_WARPS) {
            const int wrow = rt * 16;
            float num[DP / 8][4], den[2];
#pragma unroll
            for (int n = 0; n < DP / 8; ++n) num[n][0] = num[n][1] = num[n][2] = num[n][3] = 0.f;
            if (FEAT_KIND == 2) fa_apply_state<true>(num, den, sm.phi0, sm.s, sm.iz, 1.f, wrow, lane);
            else fa_apply_state<false>(num, den, sm.phi0, sm.s, sm.z, s_mul, wrow, lane);
            if (tiles == 1) {
                fa_store_out(o + (long long)bh * n_q * HEAD_DIM, num, den, row0 + wrow, n_q, lane);
                continue;
            }
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = wrow + (lane >> 2) + 8 * h;
                // positive features: the running row max grew, rescale what is accumulated
                const float alpha = FEAT_KIND == 2 && t > 0 && sm.row1[r] != ATTN_NEG_INF
                                    ? expf(sm.row0[r] - sm.row1[r]) : 1.f;
                den_acc[rt][h] = den_acc[rt][h] * alpha + den[h];
#pragma unroll
                for (int n = 0; n < DP / 8; ++n) {
                    const int col = n * 8 + 2 * (lane & 3);
                    if (col < HEAD_DIM) {
                        float* acc = sm.oacc + r * HEAD_DIM + col;
                        acc[0] = acc[0] * alpha + num[n][2 * h];
                        acc[1] = acc[1] * alpha + num[n][2 * h + 1];
                    }
                }
            }
        }
        __syncwarp();
        for (int rt = warp; rt < RT; rt += FA_WARPS)        // the warp's rows: new max is old
            if ((lane & 3) == 0)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int r = rt * 16 + (lane >> 2) + 8 * h;
                    sm.row0[r] = sm.row1[r];
                }
        __syncwarp();
    }
    if (tiles == 1) return;
    attn_t* o_h = o + (long long)bh * n_q * HEAD_DIM;
    for (int rt = warp; rt < RT; rt += FA_WARPS)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = rt * 16 + (lane >> 2) + 8 * h;
            if (row0 + r >= n_q) continue;
            const float dv = den_acc[rt][h];
            for (int col = 2 * (lane & 3); col < HEAD_DIM; col += 8)
                *reinterpret_cast<unsigned*>(o_h + (long long)(row0 + r) * HEAD_DIM + col) =
                    attn_pack2(dv != 0.f ? sm.oacc[r * HEAD_DIM + col] / dv : 0.f,
                               dv != 0.f ? sm.oacc[r * HEAD_DIM + col + 1] / dv : 0.f);
        }
}

// One key slice [s0, s0 + FA_SUB) of the causal chunk for a warp's 16 query rows (wrow in the
// chunk; row_lag = the rows' first query index minus the chunk's first key index, after
// bottom-right alignment): A = φ(Q_c) φ(K_c)ᵀ masked to key <= query and to the chunk's
// cols keys, weighted by g_j (positive), its row sums added to den, num += A V_c.
// A is rounded to 16 bits for A V, relative to a per-row power of two 2^E that brings the
// largest entry seen so far into [0.5, 1) (as FlashAttention's P <= 1, and, like its
// online softmax, rescaled only when a slice raises it): num holds num_true 2^-E between
// slices, fa_causal_unscale restores it. Powers of two, so the rescaling itself is exact;
// E is clamped to [-126, 126], so a row of fp32 subnormals is a row of zeros.
#define FA_NO_SCALE (-1e30f)
__device__ __forceinline__ void fa_causal_slice(float (*num)[4], float den[2], float e_row[2],
                                                const FaSmem& sm, int s0, int cols,
                                                int row_lag, int wrow, int lane) {
    float a[1][FA_SUB / 8][4];
    attn_warp_qk_mt<1, FA_SUB, MP>(a, sm.phi0, sm.phi1 + s0 * MP, wrow, lane);
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < FA_SUB / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int j = s0 + n * 8 + 2 * (lane & 3) + (e & 1);        // key in the chunk
            const int i = (lane >> 2) + (e >> 1) * 8;                    // row in the tile
            if (j >= cols || j > i + row_lag) a[0][n][e] = 0.f;
            else if (FEAT_KIND == 2) a[0][n][e] *= sm.row0[j];     // key weight g_j
            rs[e >> 1] += a[0][n][e];
        }
    den[0] += fa_quad_sum(rs[0]);
    den[1] += fa_quad_sum(rs[1]);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float mx = 0.f;
#pragma unroll
        for (int n = 0; n < FA_SUB / 8; ++n)
            mx = fmaxf(mx, fmaxf(fabsf(a[0][n][2 * h]), fabsf(a[0][n][2 * h + 1])));
        mx = fa_quad_max(mx);
        if (mx > 0.f) {
            const float k = fmaxf(fminf(floorf(log2f(mx)) + 1.f, 126.f), -126.f);
            if (k > e_row[h]) {                            // a larger entry: rescale num
                const float f = exp2f((e_row[h] == FA_NO_SCALE ? 0.f : e_row[h]) - k);
#pragma unroll
                for (int n = 0; n < DP / 8; ++n) {
                    num[n][2 * h] *= f; num[n][2 * h + 1] *= f;
                }
                e_row[h] = k;
            }
        }
        const float down = e_row[h] == FA_NO_SCALE ? 1.f : exp2f(-e_row[h]);
#pragma unroll
        for (int n = 0; n < FA_SUB / 8; ++n) {
            a[0][n][2 * h] *= down; a[0][n][2 * h + 1] *= down;
        }
    }
    attn_warp_pv<FA_SUB, DP>(num, a[0], sm.x2 + s0 * DP, lane);       // + A V_c
}

// num_true = num 2^E after the chunk's slices (fa_causal_slice).
__device__ __forceinline__ void fa_causal_unscale(float (*num)[4], const float e_row[2]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float up = e_row[h] == FA_NO_SCALE ? 1.f : exp2f(e_row[h]);
#pragma unroll
        for (int n = 0; n < DP / 8; ++n) {
            num[n][2 * h] *= up; num[n][2 * h + 1] *= up;
        }
    }
}

// The causal sweep. q (B, H, n_q, d), k, v (B, G, n_k, d), w as feature_state. T_m = 1: o;
// T_m > 1: pnum (T_m, B·H, n_q, d), pden and plog (T_m, B·H, n_q) fp32 (plog: positive only).
extern "C" __global__ void __launch_bounds__(FA_THREADS, 1)
feature_causal(const attn_t* __restrict__ q, const attn_t* __restrict__ k,
               const attn_t* __restrict__ v, const attn_t* __restrict__ w,
               attn_t* __restrict__ o, float* __restrict__ pnum, float* __restrict__ pden,
               float* __restrict__ plog, int n_q, int n_k, int heads, int kv_group,
               float in_scale, int w_per_head, int total_units) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int t = blockIdx.x, tiles = gridDim.x, bh = blockIdx.y, nbh = gridDim.y;
    char* p = reinterpret_cast<char*>(smem_raw);
    FaSmem sm{};
    sm.x0 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * DP * 2));
    sm.x1 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * DP * 2));
    sm.x2 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * DP * 2));
    if (RANDOM) sm.w = reinterpret_cast<attn_t*>(fa_take(p, UP * DP * 2));
    sm.phi0 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * MP * 2));
    sm.phi1 = reinterpret_cast<attn_t*>(fa_take(p, CHUNK * MP * 2));
    sm.s = reinterpret_cast<float*>(fa_take(p, MP * HEAD_DIM * 4));
    sm.z = reinterpret_cast<float*>(fa_take(p, MP * 4));
    sm.row0 = reinterpret_cast<float*>(fa_take(p, CHUNK * 4));   // key weights (positive)
    sm.row1 = reinterpret_cast<float*>(fa_take(p, CHUNK * 4));   // query row references
    sm.red = reinterpret_cast<float*>(fa_take(p, FA_WARPS * 4));
    if (FEAT_KIND == 2) {
        sm.iz = reinterpret_cast<float*>(fa_take(p, MP * 4));
        sm.lz = reinterpret_cast<float*>(fa_take(p, MP * 4));
    }
    FaArgs f{t * FEAT_UNITS, min(FEAT_UNITS, total_units - t * FEAT_UNITS), 0, in_scale};
    fa_load_w(sm.w, w + (w_per_head ? (long long)bh * total_units * HEAD_DIM : 0), f.u0, f.nu, tid);
    attn_cp_async_commit();
    for (int i = tid; i < MP * HEAD_DIM; i += FA_THREADS) sm.s[i] = 0.f;
    for (int i = tid; i < MP; i += FA_THREADS) sm.z[i] = 0.f;
    float key_shift = ATTN_NEG_INF;                        // running key shift (per thread)
    float* shift = &key_shift;
    const long long kv = (long long)fa_kv_head(bh, heads, kv_group) * n_k * HEAD_DIM;
    const attn_t* q_h = q + (long long)bh * n_q * HEAD_DIM;
    const int off = n_k - n_q;                             // bottom-right aligned diagonal
    int done = 0;                                          // keys folded into S, z
    for (int r0 = 0; r0 < n_q; r0 += CHUNK) {
        const int r1 = min(r0 + CHUNK, n_q);
        const int k_start = max(0, min(n_k, r0 + off)), k_end = max(0, min(n_k, r1 + off));
        while (done < k_start) {                           // keys every row of the chunk sees
            const int c1 = min(done + CHUNK, k_start);
            fa_fold_keys(sm, k + kv, v + kv, done, c1, f, shift, tid);
            done = c1;
        }
        const int cols = k_end - k_start;
        attn_load_tile_async<CHUNK, DP, FA_THREADS>(sm.x0, q_h, r0, n_q, HEAD_DIM, tid);
        attn_load_tile_async<CHUNK, DP, FA_THREADS>(sm.x1, k + kv, k_start, k_end, HEAD_DIM, tid);
        attn_load_tile_async<CHUNK, DP, FA_THREADS>(sm.x2, v + kv, k_start, k_end, HEAD_DIM, tid);
        attn_cp_async_commit();
        attn_cp_async_wait<0>();
        __syncthreads();
        f.valid = r1 - r0;
        fa_features<false>(sm.phi0, sm.x0, sm.w, f, nullptr, nullptr, sm.row1, sm.red, tid);
        f.valid = cols;
        const float factor = fa_features<true>(sm.phi1, sm.x1, sm.w, f, shift, nullptr, sm.row0,
                                               sm.red, tid);
        fa_rescale_state(sm.s, sm.z, factor, tid);
        __syncthreads();
        float s_mul = 1.f;
        if (FEAT_KIND == 2) {
            fa_norm_state(sm.iz, sm.lz, sm.z, 0.f, tid);
            __syncthreads();
        } else {
            s_mul = fa_state_mul(sm.s, sm.red, tid);
        }
        for (int rt = warp; rt < RT; rt += FA_WARPS) {
            const int wrow = rt * 16;
            float num[DP / 8][4], den[2] = {0.f, 0.f}, ref[2] = {0.f, 0.f};
#pragma unroll
            for (int n = 0; n < DP / 8; ++n) num[n][0] = num[n][1] = num[n][2] = num[n][3] = 0.f;
            if (FEAT_KIND != 2)                            // φ(Q) S, φ(Q) z
                fa_apply_state<false>(num, den, sm.phi0, sm.s, sm.z, s_mul, wrow, lane);
            // A = φ(Q_c) φ(K_c)ᵀ, masked, in slices of FA_SUB keys (registers: FA_SUB / 2 of A
            // next to the DP / 2 of num); each slice's A V_c is added before the next is built
            float e_row[2] = {FA_NO_SCALE, FA_NO_SCALE};
#pragma unroll 1
            for (int s0 = 0; s0 < CHUNK && s0 < cols; s0 += FA_SUB)
                fa_causal_slice(num, den, e_row, sm, s0, cols, r0 + wrow - (k_start - off),
                                wrow, lane);
            fa_causal_unscale(num, e_row);
            if (FEAT_KIND == 2) {
                // φ(Q) S with S_f / z_f: this warp's φ(Q) rows again, with log z_f in the
                // exponent, relative to ref >= the plain rows' reference
                float prev[2];
#pragma unroll
                for (int h = 0; h < 2; ++h) prev[h] = sm.row1[wrow + (lane >> 2) + 8 * h];
                FaArgs fq = f;
                fq.valid = r1 - r0;
                fq.lz = sm.lz;
                fa_query_tile(sm.phi0, sm.x0, sm.w, fq, wrow, prev, ref, lane);
                __syncwarp();
                float alpha[2];
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    alpha[h] = expf(prev[h] - ref[h]);
                    den[h] *= alpha[h];
                }
#pragma unroll
                for (int n = 0; n < DP / 8; ++n) {
                    num[n][0] *= alpha[0]; num[n][1] *= alpha[0];
                    num[n][2] *= alpha[1]; num[n][3] *= alpha[1];
                }
                float dS[2];
                fa_apply_state<true>(num, dS, sm.phi0, sm.s, sm.iz, 1.f, wrow, lane);
                den[0] += dS[0];
                den[1] += dS[1];
            }
            if (tiles == 1) {
                fa_store_out(o + (long long)bh * n_q * HEAD_DIM, num, den, r0 + wrow, n_q, lane);
                continue;
            }
            const long long part = ((long long)t * nbh + bh) * n_q;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = r0 + wrow + (lane >> 2) + 8 * h;
                if (r >= n_q) continue;
#pragma unroll
                for (int n = 0; n < DP / 8; ++n) {
                    const int col = n * 8 + 2 * (lane & 3);
                    if (col < HEAD_DIM) {
                        pnum[(part + r) * HEAD_DIM + col] = num[n][2 * h];
                        pnum[(part + r) * HEAD_DIM + col + 1] = num[n][2 * h + 1];
                    }
                }
                if ((lane & 3) == 0) {
                    pden[part + r] = den[h];
                    // true num, den = these x e^{row max + key shift}
                    if (FEAT_KIND == 2) plog[part + r] = ref[h] + key_shift;
                }
            }
        }
        __syncthreads();                                   // S, z, φ(Q) read by every warp
        if (cols > 0) fa_state_update(sm.s, sm.z, sm.phi1, sm.x2, sm.row0, sm.red, tid);
        __syncthreads();
        done = k_end;
    }
}

// Causal, T_m > 1: merge the slices' partials. Grid (⌈n_q / CHUNK⌉, B·H); CUDA cores (the
// simulator's combine kernel has no matmul: tc_path "none"). Each row's slice weights
// e^{λ_t - max λ} / Σ_t den_t e^{λ_t - max λ} go through shared memory (T_m x CHUNK
// floats), so pden and plog are read once, pnum once.
extern "C" __global__ void __launch_bounds__(FA_THREADS, 1)
feature_combine(const float* __restrict__ pnum, const float* __restrict__ pden,
                const float* __restrict__ plog, attn_t* __restrict__ o, int n_q, int tiles) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    float* wt_s = reinterpret_cast<float*>(smem_raw);      // [tiles][CHUNK]
    const int bh = blockIdx.y, nbh = gridDim.y, row0 = blockIdx.x * CHUNK;
    const int rows = min(CHUNK, n_q - row0);
    for (int i = threadIdx.x; i < rows; i += FA_THREADS) {
        const int r = row0 + i;
        float top = ATTN_NEG_INF;
        if (FEAT_KIND == 2)
            for (int t = 0; t < tiles; ++t) top = fmaxf(top, plog[((long long)t * nbh + bh) * n_q + r]);
        // rows that have seen no key have log-scale -inf: weight 0, not NaN
        const float ref = top == ATTN_NEG_INF ? 0.f : top;
        float den = 0.f;
        for (int t = 0; t < tiles; ++t) {
            const long long pr = ((long long)t * nbh + bh) * n_q + r;
            const float wt = FEAT_KIND == 2 ? expf(plog[pr] - ref) : 1.f;
            wt_s[t * CHUNK + i] = wt;
            den = fmaf(pden[pr], wt, den);
        }
        for (int t = 0; t < tiles; ++t)                    // (divide: 1 / den may overflow)
            wt_s[t * CHUNK + i] = den != 0.f ? wt_s[t * CHUNK + i] / den : 0.f;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < rows * HEAD_DIM; idx += FA_THREADS) {
        const int i = idx / HEAD_DIM, col = idx % HEAD_DIM, r = row0 + i;
        float num = 0.f;
        for (int t = 0; t < tiles; ++t)
            num = fmaf(pnum[(((long long)t * nbh + bh) * n_q + r) * HEAD_DIM + col],
                       wt_s[t * CHUNK + i], num);
        o[((long long)bh * n_q + r) * HEAD_DIM + col] = attn_from_f32(num);
    }
}
