// reformer.cu — Reformer LSH attention with shared QK, the port of algorithms/reformer.py
// (Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", ICLR 2020, arXiv
// 2001.04451, §2), with the bucket sort as an LSD radix sort modelled on CUB's onesweep
// (Adinets & Merrill, "Onesweep: A Faster Least Significant Digit Radix Sort for GPUs",
// 2022, arXiv 2206.01784: one histogram pass, then one scatter pass per 8-bit digit whose
// CTAs chain their digit counts by decoupled look-back).
//
// Kernels, per (batch, head) "bh" and hash round r (the simulator's kernels, same grids):
//   reformer_hash      grid (ceil(N / HASH_ROWS), B·H). Q rows (HASH_ROWS x d) and, per
//                      round, R_rᵀ (ROT_COLS x d) -> SRAM; proj = Q R_r by mma.sync (fp32
//                      accumulators) -> SRAM; one thread per row takes the argmax over
//                      [proj, -proj] of each bucket factor (the simulator's loop and tie rule:
//                      first maximum, +columns before -columns) and writes bucket id and
//                      position (int32).
//   reformer_sort_hist grid (ceil(N / SORT_TILE), H_r·B·H): every digit's 256-bin histogram of
//                      the tile's bucket ids, shared atomics, then added to the segment's
//                      global histogram (int atomics).
//   reformer_sort_pass grid as the histogram, once per 8-bit digit (launch p = simulated
//                      kernel reformer_sort_pass{p}): a CTA takes its tile id from an atomic
//                      counter (so a tile's predecessors are CTAs that already run: the
//                      look-back below always terminates, whatever order the hardware starts
//                      CTAs in), stages the tile's (key, value) pairs in SRAM, ranks them
//                      stably (rounds of 256 keys: __match_any_sync + popc inside a warp,
//                      per-warp digit counts scanned across warps in order), publishes its
//                      per-digit counts ("aggregate"), looks back over its predecessors'
//                      flags (adding aggregates until an "inclusive" prefix) and publishes its
//                      own inclusive prefix, then scatters each pair to global digit offset
//                      (exclusive scan of the histogram) + earlier tiles' count + rank.
//   reformer_attn      grid (N / CHUNK, H_r, B·H): one CTA per (chunk, round, head). Gathers
//                      the sorted positions of the chunk and the previous one (wrapping), the
//                      2 CHUNK Q rows (the shared keys; rows CHUNK.. are the chunk's queries)
//                      and V rows by cp.async, and the bucket ids of those tokens in every
//                      round; S = Q_c Q_2cᵀ by mma.sync, scaled by 1 / |q_j| in fp32 (shared-QK:
//                      k_j = q_j / |q_j|), then the simulator's masks: another bucket or
//                      (causal) a later token -inf, the token itself SELF_LOGIT, otherwise
//                      scale·s - log N_ij (N_ij = rounds sharing the bucket). Softmax over the
//                      C x 2C tile in fp32 registers, O = P V by mma.sync; O rows are scattered
//                      to their tokens: to o when H_r = 1, else to the round's o_rounds and
//                      lse_rounds.
//   reformer_combine   grid (ceil(N / COMBINE_ROWS), B·H), H_r > 1: o = Σ_r w_r o^(r) with
//                      w_r = exp(z^(r) - max) / Σ exp(z - max).
//
// Compile-time defines (from the simulator's ReformerPlan via algorithms/ports/reformer.py;
// one define set for all kernels):
//   HEAD_DIM     = d (a multiple of 8);
//   CHUNK        = plan.bucket_size C (a multiple of 16, <= 64: one warp per 16 queries,
//                  the C x 2C score rows of a warp in registers);
//   HASHES       = plan.hashes H_r;
//   HASH_ROWS    = plan.hash_block B_h (rows per hash CTA);
//   ROT_COLS     = plan.rotation_cols k = Σ f/2 (columns of R per round);
//   SORT_TILE    = plan.sort_tile (keys per sort CTA, a multiple of 256);
//   COMBINE_ROWS = plan.combine_block B_c.
// Threads: 128 for hash, attn and combine (the simulator's THREADS_PER_CTA), 256 for the
// sort (its threads_per_cta); with CHUNK = 32 two of the attention CTA's four warps only
// help with the gathers.
//
// HBM traffic against the simulator's count: the same bytes, except
//   - R_rᵀ is read as the simulator counts it (d k e per round and CTA); the hash kernel
//     stores it transposed (host layout), which changes no byte;
//   - the sort's scratch (the global histograms, tile counters and look-back flags: 4 bytes
//     per digit bin and tile) is read and written besides the counted pairs; the
//     simulator does not count it ("a few KB per CTA", algorithms/kernels/radix_sort.py). They are
//     zero-filled before each run (the backend's fill of the "work" tensors);
//   - reformer_attn reads the 2C positions and 2C H_r bucket ids, 2C Q and V rows, writes C
//     rows (+ C lse): as counted (the chunk's queries are rows of the gathered Q tile, not a
//     second read). Scattered rows are 16-byte chunks: coalescing differs, bytes do not.
// Shared memory: the hash kernel HASH_ROWS x d + pad16(k) x d 16-bit tiles and the fp32 proj
// tile (the plan's Q_h, R_r, proj; k padded to 16); the attention kernel 2C x d Q and V
// tiles plus positions, bucket ids and norms (the plan also counts a C x d Q_c copy and a
// C x 2C fp32 S tile, which live in the Q tile and in registers here); the sort pass its
// SORT_TILE keys and values plus 8 KB of per-warp digit counts.
// Numerics: the hash multiplies the stored fp16/bf16 Q and R exactly (products of 16-bit
// values are exact in fp32) and sums in fp32: the simulator hashes the same stored values
// (reformer.storage_values), so buckets agree up to float32 summation order. The scores use
// the stored Q for both sides and the norm in fp32; P is rounded to the storage type for
// the P V MMA (the simulator multiplies in fp32), and o^(r) is stored in the storage type.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (attn_common.cuh's attn_t).
#include "attn_common.cuh"

#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#ifndef CHUNK
#define CHUNK 64
#endif
#ifndef HASHES
#define HASHES 4
#endif
#ifndef HASH_ROWS
#define HASH_ROWS 128
#endif
#ifndef ROT_COLS
#define ROT_COLS 32
#endif
#ifndef SORT_TILE
#define SORT_TILE 4096
#endif
#ifndef COMBINE_ROWS
#define COMBINE_ROWS 128
#endif

#define DPAD ATTN_PAD16(HEAD_DIM)
#define CPR (DPAD / 8)
#define COLS_PAD ATTN_PAD16(ROT_COLS)
#define WINDOW (2 * CHUNK)                 // keys of a chunk: the previous chunk, then its own
#define RF_THREADS 128
#define RF_WARPS (RF_THREADS / 32)
#define SORT_THREADS 256
#define RADIX 256                          // 8-bit digits
#define MAX_PASSES 4                       // 32-bit keys
#define SELF_LOGIT (-1.0e5f)               // reformer.SELF_LOGIT
// look-back flag words: value (a digit count or prefix, < 2^29) | state
#define FLAG_AGGREGATE (1 << 29)
#define FLAG_INCLUSIVE (1 << 30)
#define FLAG_VALUE (FLAG_AGGREGATE - 1)

static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");
static_assert(CHUNK % 16 == 0 && CHUNK / 16 <= RF_WARPS, "CHUNK must be a multiple of 16, <= 64");
static_assert(HASH_ROWS % 16 == 0, "HASH_ROWS must be a multiple of 16");
static_assert(SORT_TILE % SORT_THREADS == 0, "SORT_TILE must be a multiple of 256");
static_assert(SORT_THREADS == RADIX, "the sort kernels give each thread one digit bin");

// ---- cross-CTA flags of the look-back -----------------------------------------------------
// (tests/cuda_emu replaces these: its CTAs run one after another, so a wait on a flag that
// is still 0 could never end there and stops the emulator instead.)
#ifndef ATTN_PTX_EMULATION
// One 32-bit word holds value and state, so a relaxed (gpu-scope) store publishes both at
// once and no fence is needed: nothing else a reader uses depends on the write.
__device__ __forceinline__ void attn_st_flag(int* p, int v) {
    asm volatile("st.relaxed.gpu.global.b32 [%0], %1;\n" :: "l"(p), "r"(v) : "memory");
}
// Spin until the flag word is nonzero (published), return it. (A volatile C++ loop here made
// ptxas spill 4 bytes in reformer_sort_pass; the PTX load does not.)
__device__ __forceinline__ int attn_spin_wait_nonzero(const int* p) {
    int s;
    do {
        asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];\n" : "=r"(s) : "l"(p) : "memory");
    } while (s == 0);
    return s;
}
#endif

// ---- reformer_hash ------------------------------------------------------------------------

// Arguments: q (B, H, N, d) storage type; rot_t (H_r, ROT_COLS, d) = R_rᵀ; factors (n_factors)
// the bucket factors (Π = N / CHUNK); buckets, positions (B·H, H_r, N) int32.
extern "C" __global__ void __launch_bounds__(RF_THREADS)
reformer_hash(const attn_t* __restrict__ q, const attn_t* __restrict__ rot_t,
              const int* __restrict__ factors, int* __restrict__ buckets,
              int* __restrict__ positions, int n, int n_factors) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);                // HASH_ROWS x DPAD
    attn_t* r_s = q_s + HASH_ROWS * DPAD;                             // COLS_PAD x DPAD: R_rᵀ
    float* proj_s = reinterpret_cast<float*>(r_s + COLS_PAD * DPAD);  // HASH_ROWS x COLS_PAD
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int row0 = blockIdx.x * HASH_ROWS;
    const long long bh = blockIdx.y;

    // -- Q rows -> SRAM (rows past N zero-filled), once for all rounds --
    attn_load_tile_async<HASH_ROWS, DPAD, RF_THREADS>(q_s, q + bh * n * HEAD_DIM, row0, n,
                                                      HEAD_DIM, tid);
    for (int r = 0; r < HASHES; ++r) {
        // -- R_rᵀ -> SRAM (columns past ROT_COLS zero-filled) --
        attn_load_tile_async<COLS_PAD, DPAD, RF_THREADS>(
            r_s, rot_t + (long long)r * ROT_COLS * HEAD_DIM, 0, ROT_COLS, HEAD_DIM, tid);
        attn_cp_async_commit();
        attn_cp_async_wait<0>();
        __syncthreads();                                   // Q and R_r landed for every warp
        // -- proj = Q R_r, 16 rows a warp at a time, fp32 -> SRAM --
        for (int t = warp; t < HASH_ROWS / 16; t += RF_WARPS) {
            float s[COLS_PAD / 8][4];
            attn_warp_qk<COLS_PAD, DPAD>(s, q_s, r_s, 16 * t, lane);
#pragma unroll
            for (int c = 0; c < COLS_PAD / 8; ++c)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int row = 16 * t + (lane >> 2) + 8 * (e >> 1);
                    const int col = 8 * c + 2 * (lane & 3) + (e & 1);
                    attn_st_shared_f32(proj_s + row * COLS_PAD + col, s[c][e]);
                }
        }
        __syncthreads();                                   // proj complete
        // -- argmax over [proj, -proj] per factor, mixed-radix combined --
        for (int i = tid; i < HASH_ROWS && row0 + i < n; i += RF_THREADS) {
            const float* p = proj_s + i * COLS_PAD;
            int bucket = 0, radix = 1, col = 0;
            for (int f = 0; f < n_factors; ++f) {
                const int half = factors[f] / 2;
                int best = 0;
                float best_val = attn_ld_shared_f32(p + col);
                for (int j = 0; j < half; ++j) {               // +x R columns first
                    const float x = attn_ld_shared_f32(p + col + j);
                    if (x > best_val) { best_val = x; best = j; }
                }
                for (int j = 0; j < half; ++j) {               // then -x R
                    const float x = -attn_ld_shared_f32(p + col + j);
                    if (x > best_val) { best_val = x; best = half + j; }
                }
                bucket += best * radix;
                radix *= factors[f];
                col += half;
            }
            const long long at = (bh * HASHES + r) * n + row0 + i;
            buckets[at] = bucket;
            positions[at] = row0 + i;
        }
        __syncthreads();                                   // proj_s, r_s free for round r + 1
    }
}

// ---- reformer_sort_hist -------------------------------------------------------------------

// Arguments: keys (H_r·B·H, N) bucket ids; hist (H_r·B·H, passes, 256), zero-filled.
extern "C" __global__ void __launch_bounds__(SORT_THREADS)
reformer_sort_hist(const int* __restrict__ keys, int* __restrict__ hist, int n, int passes) {
    __shared__ int hist_s[MAX_PASSES * RADIX];
    const int tid = threadIdx.x;
    const long long seg = blockIdx.y;
    for (int i = tid; i < MAX_PASSES * RADIX; i += SORT_THREADS) hist_s[i] = 0;
    __syncthreads();
    const int t0 = blockIdx.x * SORT_TILE, t1 = min(n, t0 + SORT_TILE);
    for (int i = t0 + tid; i < t1; i += SORT_THREADS) {
        const unsigned key = static_cast<unsigned>(keys[seg * n + i]);
        for (int p = 0; p < passes; ++p)
            atomicAdd(&hist_s[p * RADIX + ((key >> (8 * p)) & 255u)], 1);
    }
    __syncthreads();
    for (int i = tid; i < passes * RADIX; i += SORT_THREADS)
        if (hist_s[i]) atomicAdd(&hist[seg * passes * RADIX + i], hist_s[i]);
}

// ---- reformer_sort_pass -------------------------------------------------------------------

// Exclusive prefix sum of one value per thread over the CTA's 256 threads (Hillis-Steele in
// `buf`, 2 x 256 ints); every thread must call it.
__device__ __forceinline__ int rf_exclusive_scan256(int x, int* buf, int tid) {
    buf[tid] = x;
    __syncthreads();
    int in = 0;
    for (int off = 1; off < RADIX; off <<= 1) {
        const int y = buf[in * RADIX + tid] + (tid >= off ? buf[in * RADIX + tid - off] : 0);
        buf[(1 - in) * RADIX + tid] = y;
        in = 1 - in;
        __syncthreads();
    }
    return buf[in * RADIX + tid] - x;
}

// One stable scatter pass on the digit (key >> 8 pass) & 255 of every segment's N pairs.
// Arguments: keys_in, vals_in -> keys_out, vals_out (H_r·B·H, N) int32; hist as written by
// reformer_sort_hist; tile_counter (H_r·B·H, passes) and flags (H_r·B·H, passes, tiles, 256),
// zero-filled before the run.
extern "C" __global__ void __launch_bounds__(SORT_THREADS)
reformer_sort_pass(const int* __restrict__ keys_in, const int* __restrict__ vals_in,
                   int* __restrict__ keys_out, int* __restrict__ vals_out,
                   const int* __restrict__ hist, int* __restrict__ tile_counter,
                   int* __restrict__ flags, int n, int passes, int pass) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    int* keys_s = reinterpret_cast<int*>(smem_raw);               // SORT_TILE keys
    int* vals_s = keys_s + SORT_TILE;                             // SORT_TILE values
    __shared__ int warp_count[SORT_THREADS / 32][RADIX];          // one round's per-warp counts
    __shared__ int ranked[RADIX];          // per digit: keys of this tile ranked so far
    __shared__ int base[RADIX];            // per digit: global offset + earlier tiles' keys
    __shared__ int scan_buf[2 * RADIX];
    __shared__ int tile_s;
    constexpr int ROUNDS = SORT_TILE / SORT_THREADS;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const long long seg = blockIdx.y, sp = seg * passes + pass;
    const int tiles = gridDim.x;

    // -- tile id in the order CTAs start: every lower tile belongs to a CTA already running --
    if (tid == 0) tile_s = atomicAdd(&tile_counter[sp], 1);
    __syncthreads();
    const int tile = tile_s, t0 = tile * SORT_TILE, count = min(SORT_TILE, n - t0);

    // -- (key, value) pairs of the tile -> SRAM, coalesced --
    for (int i = tid; i < count; i += SORT_THREADS) {
        keys_s[i] = keys_in[seg * n + t0 + i];
        vals_s[i] = vals_in[seg * n + t0 + i];
    }
    ranked[tid] = 0;
    // -- digit offsets: exclusive scan of the digit's global histogram --
    const int digit_offset = rf_exclusive_scan256(hist[sp * RADIX + tid], scan_buf, tid);

    // -- stable rank within the tile: key k·256 + tid in round k; ties in tile order --
    const int shift = 8 * pass;
    int rank[ROUNDS];
#pragma unroll
    for (int k = 0; k < ROUNDS; ++k) {
        const int i = k * SORT_THREADS + tid;
        const bool valid = i < count;
        const int digit = valid ? int((static_cast<unsigned>(keys_s[i]) >> shift) & 255u) : RADIX;
        const unsigned peers = __match_any_sync(0xffffffffu, digit);   // lanes with my digit
        const int below = __popc(peers & ((1u << lane) - 1u));
#pragma unroll
        for (int w = 0; w < SORT_THREADS / 32; ++w) warp_count[w][tid] = 0;
        __syncthreads();
        if (valid && below == 0) warp_count[warp][digit] = __popc(peers);
        __syncthreads();
        int run = ranked[tid];                 // thread tid scans digit tid over the warps
#pragma unroll
        for (int w = 0; w < SORT_THREADS / 32; ++w) {
            const int c = warp_count[w][tid];
            warp_count[w][tid] = run;
            run += c;
        }
        ranked[tid] = run;
        __syncthreads();
        rank[k] = valid ? warp_count[warp][digit] + below : 0;
        __syncthreads();                       // warp_count is cleared by the next round
    }

    // -- decoupled look-back, thread tid for digit tid: publish the tile's count, add the
    //    predecessors' aggregates until one publishes its inclusive prefix --
    const int d = tid, mine = ranked[d];
    int* flag = flags + sp * tiles * RADIX;                       // [tile][digit]
    attn_st_flag(&flag[tile * RADIX + d], (tile == 0 ? FLAG_INCLUSIVE : FLAG_AGGREGATE) | mine);
    int exclusive = 0;
    for (int p = tile - 1; p >= 0; --p) {
        const int s = attn_spin_wait_nonzero(&flag[p * RADIX + d]);
        exclusive += s & FLAG_VALUE;
        if (s & FLAG_INCLUSIVE) break;
    }
    if (tile > 0) attn_st_flag(&flag[tile * RADIX + d], FLAG_INCLUSIVE | (exclusive + mine));
    base[d] = digit_offset + exclusive;
    __syncthreads();

    // -- scatter each pair to its sorted place --
#pragma unroll
    for (int k = 0; k < ROUNDS; ++k) {
        const int i = k * SORT_THREADS + tid;
        if (i < count) {
            const int key = keys_s[i];
            const int digit = int((static_cast<unsigned>(key) >> shift) & 255u);
            const long long at = seg * n + base[digit] + rank[k];
            keys_out[at] = key;
            vals_out[at] = vals_s[i];
        }
    }
}

// ---- reformer_attn ------------------------------------------------------------------------

// Arguments: q (B, H, N, d), v (B, H / kv_group, N, d); buckets, perm (B·H, H_r, N) int32 (perm:
// the sorted positions); o (B, H, N, d) written when H_r = 1, else o_rounds (B·H, H_r, N, d)
// and lse_rounds (B·H, H_r, N) fp32 (null when H_r = 1).
extern "C" __global__ void __launch_bounds__(RF_THREADS)
reformer_attn(const attn_t* __restrict__ q, const attn_t* __restrict__ v,
              const int* __restrict__ buckets, const int* __restrict__ perm,
              attn_t* __restrict__ o, attn_t* __restrict__ o_rounds,
              float* __restrict__ lse_rounds, int n, int heads, int kv_group, float scale,
              int causal) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* k_s = reinterpret_cast<attn_t*>(smem_raw);   // WINDOW x DPAD gathered Q rows
    attn_t* v_s = k_s + WINDOW * DPAD;                    // WINDOW x DPAD gathered V rows
    __shared__ int tok_s[WINDOW];                         // token of each window slot
    __shared__ int bucket_s[HASHES][WINDOW];              // its bucket in every round
    __shared__ float inv_norm_s[WINDOW];                  // 1 / |q_j| (0 for a zero row)
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int ch = blockIdx.x, r = blockIdx.y, n_chunks = gridDim.x;
    const long long bh = blockIdx.z, seg = bh * HASHES;
    const int prev = (ch + n_chunks - 1) % n_chunks;      // the first chunk looks back to the last
    const int b = int(bh / heads), h = int(bh % heads);
    const attn_t* q_h = q + bh * n * HEAD_DIM;
    const attn_t* v_h = v + ((long long)b * (heads / kv_group) + h / kv_group) * n * HEAD_DIM;

    // -- sorted positions of the previous chunk and this one --
    for (int j = tid; j < WINDOW; j += RF_THREADS)
        tok_s[j] = perm[(seg + r) * n + (j < CHUNK ? prev * CHUNK + j : ch * CHUNK + j - CHUNK)];
    __syncthreads();
    // -- gather their Q and V rows (cp.async), and their bucket ids of every round --
    for (int idx = tid; idx < WINDOW * CPR; idx += RF_THREADS) {
        const int j = idx / CPR, c = idx % CPR;
        const bool ok = c * 8 < HEAD_DIM;
        const long long at = (long long)tok_s[j] * HEAD_DIM + c * 8;
        attn_cp_async16(k_s + attn_swizzle(j, c, CPR), ok ? q_h + at : q_h, ok ? 16 : 0);
        attn_cp_async16(v_s + attn_swizzle(j, c, CPR), ok ? v_h + at : v_h, ok ? 16 : 0);
    }
    attn_cp_async_commit();
    for (int idx = tid; idx < HASHES * WINDOW; idx += RF_THREADS) {
        const int rr = idx / WINDOW, j = idx % WINDOW;
        bucket_s[rr][j] = buckets[(seg + rr) * n + tok_s[j]];
    }
    attn_cp_async_wait<0>();
    __syncthreads();                                      // Q, V rows landed for every warp
    // -- key norms in fp32 from the stored rows (shared-QK: k_j = q_j / |q_j|) --
    for (int j = tid; j < WINDOW; j += RF_THREADS) {
        float ss = 0.f;
        for (int c = 0; c < HEAD_DIM / 8; ++c) {
            const attn_u4 w = *reinterpret_cast<const attn_u4*>(k_s + attn_swizzle(j, c, CPR));
            const unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const attn_f2 f = attn_unpack2(u[e]);
                ss += f.x * f.x + f.y * f.y;
            }
        }
        inv_norm_s[j] = ss > 0.f ? 1.f / sqrtf(ss) : 0.f;
    }
    __syncthreads();

    // -- each of the CHUNK / 16 warps: 16 queries (window rows CHUNK + 16 w ..) x 2C keys --
    const int wrow = CHUNK + 16 * warp;
    const bool active = warp < CHUNK / 16;
    float acc[DPAD / 8][4], m[2], l[2];
    attn_softmax_init<DPAD>(acc, m, l);
    if (active) {
        float s[WINDOW / 8][4];
        attn_warp_qk<WINDOW, DPAD>(s, k_s, k_s, wrow, lane);          // S = Q_c Q_2cᵀ
#pragma unroll
        for (int c = 0; c < WINDOW / 8; ++c)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = wrow + (lane >> 2) + 8 * (e >> 1);      // query slot
                const int j = 8 * c + 2 * (lane & 3) + (e & 1);       // key slot
                const int ti = tok_s[i], tj = tok_s[j];
                float x;
                if (bucket_s[r][j] != bucket_s[r][i] || (causal && tj > ti)) {
                    x = ATTN_NEG_INF;                                  // outside P_i
                } else if (tj == ti) {
                    x = SELF_LOGIT;                                    // only if nothing else
                } else {
                    int shared = 0;                                    // N_ij: de-duplication
#pragma unroll
                    for (int rr = 0; rr < HASHES; ++rr)
                        shared += bucket_s[rr][j] == bucket_s[rr][i];
                    x = s[c][e] * inv_norm_s[j] * scale - __logf(float(shared));
                }
                s[c][e] = x;                                           // natural-log logits
            }
        // logits are already scaled: the softmax only converts them to base 2
        attn_warp_softmax<WINDOW, DPAD>(s, acc, m, l, ATTN_LOG2E);
        attn_warp_pv<WINDOW, DPAD>(acc, s, v_s, lane);                 // O = P V
        attn_quad_sum(l);
    }
    __syncthreads();                                  // every warp is done with the Q tile
    if (!active) return;
    // -- O rows (normalised, storage type) into the warp's own query rows of the tile, then
    //    scattered to their tokens --
    const float inv[2] = {1.f / l[0], 1.f / l[1]};       // l >= 1: the row max is in the sum
#pragma unroll
    for (int c = 0; c < DPAD / 8; ++c)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int i = wrow + (lane >> 2) + 8 * half;
            attn_st_shared32(k_s + attn_swizzle(i, c, CPR) + 2 * (lane & 3),
                             attn_pack2(acc[c][2 * half] * inv[half],
                                        acc[c][2 * half + 1] * inv[half]));
        }
    __syncwarp();
    attn_t* dst = HASHES == 1 ? o + bh * n * HEAD_DIM : o_rounds + (seg + r) * n * HEAD_DIM;
    for (int idx = lane; idx < 16 * CPR; idx += 32) {
        const int i = wrow + idx / CPR, c = idx % CPR;
        if (c * 8 < HEAD_DIM)
            *reinterpret_cast<attn_u4*>(dst + (long long)tok_s[i] * HEAD_DIM + c * 8) =
                *reinterpret_cast<const attn_u4*>(k_s + attn_swizzle(i, c, CPR));
    }
    if (HASHES > 1 && (lane & 3) == 0) {               // z^(r) = max + log Σ, natural log
        lse_rounds[(seg + r) * n + tok_s[wrow + (lane >> 2)]] = m[0] * ATTN_LN2 + __logf(l[0]);
        lse_rounds[(seg + r) * n + tok_s[wrow + (lane >> 2) + 8]] = m[1] * ATTN_LN2 + __logf(l[1]);
    }
}

// ---- reformer_combine ---------------------------------------------------------------------

// Arguments: o_rounds (B·H, H_r, N, d), lse_rounds (B·H, H_r, N) fp32 -> o (B, H, N, d).
extern "C" __global__ void __launch_bounds__(RF_THREADS)
reformer_combine(const attn_t* __restrict__ o_rounds, const float* __restrict__ lse_rounds,
                 attn_t* __restrict__ o, int n) {
    __shared__ float w_s[HASHES][COMBINE_ROWS];         // w_r of each row
    const int tid = threadIdx.x;
    const long long bh = blockIdx.y, seg = bh * HASHES;
    const int row0 = blockIdx.x * COMBINE_ROWS, rows = min(COMBINE_ROWS, n - row0);
    for (int i = tid; i < rows; i += RF_THREADS) {
        float z[HASHES], mx = ATTN_NEG_INF, total = 0.f;
#pragma unroll
        for (int r = 0; r < HASHES; ++r) {
            z[r] = lse_rounds[(seg + r) * n + row0 + i];
            mx = fmaxf(mx, z[r]);
        }
#pragma unroll
        for (int r = 0; r < HASHES; ++r) {
            z[r] = __expf(z[r] - mx);
            total += z[r];
        }
#pragma unroll
        for (int r = 0; r < HASHES; ++r) w_s[r][i] = z[r] / total;
    }
    __syncthreads();
    for (int idx = tid; idx < rows * (HEAD_DIM / 8); idx += RF_THREADS) {
        const int i = idx / (HEAD_DIM / 8), c = idx % (HEAD_DIM / 8);
        float out[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int r = 0; r < HASHES; ++r) {
            const attn_u4 w = *reinterpret_cast<const attn_u4*>(
                o_rounds + ((seg + r) * n + row0 + i) * HEAD_DIM + c * 8);
            const unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const attn_f2 f = attn_unpack2(u[e]);
                out[2 * e] += w_s[r][i] * f.x;
                out[2 * e + 1] += w_s[r][i] * f.y;
            }
        }
        const attn_u4 packed{attn_pack2(out[0], out[1]), attn_pack2(out[2], out[3]),
                             attn_pack2(out[4], out[5]), attn_pack2(out[6], out[7])};
        *reinterpret_cast<attn_u4*>(o + (bh * n + row0 + i) * HEAD_DIM + c * 8) = packed;
    }
}
