// flash2_fwd.cu — FlashAttention-2 forward (Dao 2023, arXiv 2307.08691, Algorithm 1), the
// port of algorithms/flash2/__init__.py; and ring_step, one step of Ring Attention (the port of
// algorithms/ring.py, at the end of the file), which runs the same loop over one K/V block
// with its running state in HBM (flash2_attend<true>).
//
// What it does: O = softmax(scale · Q Kᵀ [+ causal mask]) V for fp16 Q, K, V of shape
// (batch, heads, N, d) (K and V may have fewer heads: query head h reads kv head
// h / KV_GROUP), plus the fp32 log-sum-exp of every row. One CTA per (Q row block, batch·head):
// Q_i is loaded into shared memory once, K_j and V_j stream through shared memory, the
// scores S_ij, probabilities P_ij and the un-normalized accumulator O_i stay in registers
// (fp32) with an online softmax, and O_i / l_i and lse_i are written once at the end.
// Causal masking is bottom-right aligned: key j is visible to query i iff j <= i + N_k - N_q;
// K/V blocks entirely above the diagonal are never loaded; rows that see no key get O = 0
// and lse = -inf. Ragged N (not a multiple of the blocks) is handled by zero-filled loads,
// masked scores and skipped stores.
//
// Tile sizes (compile-time defines, taken from the simulator's plan by algorithms/ports/):
//   BLOCK_Q   = plan.block_q  (B_r): query rows per CTA, BLOCK_Q / (16 WARP_M_TILES) warps.
//   WARP_M_TILES = 16-row tiles per warp (1 or 2; algorithms/ports picks 2 when the registers allow,
//               d <= 64, and never with dropout): a warp's K and V fragments then serve 32
//               rows, halving the shared-memory reads per MMA — FA-2's 4 warps for a 128-row block.
//   BLOCK_K   = plan.block_k  (B_c): keys per K/V tile (a multiple of 16).
//   HEAD_DIM  = d (a multiple of 8); the MMA k-step pads it to 16 with zero columns.
// Shared memory (dynamic): Q_i, K_j, V_j tiles, (BLOCK_Q + 2 BLOCK_K) x HEAD_DIM x 2 bytes —
// the plan's smem_bytes exactly when HEAD_DIM is a multiple of 16. K_j and V_j have one
// buffer each (as in the plan): V_j's copy overlaps S = Q K_jᵀ and the softmax, K_{j+1}'s copy
// overlaps the softmax and O += P V_j.
// HBM traffic equals the simulator's count: Q once, K and V once per Q block (only the
// visible blocks when causal), O once (fp16) and lse once (fp32).
// Tensor cores: mma.sync.m16n8k16 (fp16 or bf16 in, fp32 accumulate) with ldmatrix fragment loads —
// the plan's tc_path "mma_sync".
// Dropout (--dropout p, training): compiled in with -DATTN_DROPOUT=1 (algorithms/ports adds it
// when the workload has dropout), as the simulator's flash2 (algorithms/kernels/flash_tile.py
// attend_tile): m and l are updated from the undropped P~, then P~ ∘ Z feeds O_i += P~ V_j,
// with Z regenerated on chip from the simulator's keep mask (attn_dropout.cuh, bit for bit;
// no HBM traffic; the 8-byte seed a CTA reads is not counted, as in flash1_fwd.cu). A define
// rather than a runtime flag: the kernel without dropout keeps its registers exactly (the
// hash's 64-bit temporaries next to the 255-register d = 64 tile would otherwise be budgeted
// for every launch; docs/gpu.md "The flash2 dropout" has the counts).
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (algorithms/ports adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_common.cuh"
#ifndef ATTN_DROPOUT
#define ATTN_DROPOUT 0
#endif
#if ATTN_DROPOUT
#include "attn_dropout.cuh"
#endif

#ifndef BLOCK_Q
#define BLOCK_Q 128
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

#ifndef WARP_M_TILES
#define WARP_M_TILES 1
#endif

#define DPAD ATTN_PAD16(HEAD_DIM)
#define MT WARP_M_TILES
#define WARP_ROWS (16 * MT)
#define NWARPS (BLOCK_Q / WARP_ROWS)
#define NTHREADS (NWARPS * 32)

static_assert(BLOCK_Q % WARP_ROWS == 0 && BLOCK_Q <= 256,
              "BLOCK_Q must be a multiple of 16 WARP_M_TILES, <= 256");
static_assert(BLOCK_K % 16 == 0, "BLOCK_K must be a multiple of 16");
static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 256, "HEAD_DIM must be a multiple of 8, <= 256");

// What one CTA attends: query rows [r0, min(r0 + BLOCK_Q, row_end)) against keys
// [key_lo, key_hi). flash2_fwd: a block of every row against every key; ring_step: a block of
// one ring device's rows against the key block visiting it.
struct flash2_span { int r0, row_end, key_lo, key_hi; };

// The running state a ring step keeps in HBM between steps (fp32, indexed by the global row
// (b·H + h)·n_q + i): acc, the un-normalized O rows (HEAD_DIM columns); m, the running max
// in the kernel's base-2 scaled units; l, the running sum. `first`: start from the empty
// state instead of reading it; `last`: finish (O = acc / l, lse) instead of writing it back.
struct flash2_ring_state { float* acc; float* m; float* l; bool first, last; };

// The state of the warp's rows (fragment element e of row tile t, column chunk n: row
// row0 + 16 t + lane/4 + 8 (e / 2), column 8 n + 2 (lane % 4) + e % 2, the m16n8 C layout).
// Rows >= row_end and padded columns are neither read nor written, so a CTA moves
// rows x (HEAD_DIM + 2) x 4 bytes each way: the simulator's count. l is stored summed over
// the quad (attn_quad_sum) and read back into the quad's first thread only, so that the
// partial sums the other three go on adding start from 0.
__device__ __forceinline__ void flash2_load_state(const flash2_ring_state& st,
                                                  float (&acc)[MT][DPAD / 8][4], float (&m)[MT][2],
                                                  float (&l)[MT][2], long long head_row0, int row0,
                                                  int row_end, int lane) {
#pragma unroll
    for (int t = 0; t < MT; ++t) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = row0 + 16 * t + (lane >> 2) + 8 * r;
            if (row >= row_end) continue;              // past the device's rows: stays empty
            const long long g = head_row0 + row;
            m[t][r] = st.m[g];
            l[t][r] = (lane & 3) == 0 ? st.l[g] : 0.f;
#pragma unroll
            for (int n = 0; n < DPAD / 8; ++n) {
                if (n * 8 >= HEAD_DIM) continue;      // padded columns hold zeros on chip
                const float* a = st.acc + g * HEAD_DIM + n * 8 + 2 * (lane & 3);
                acc[t][n][2 * r] = a[0];
                acc[t][n][2 * r + 1] = a[1];
            }
        }
    }
}

__device__ __forceinline__ void flash2_store_state(const flash2_ring_state& st,
                                                   const float (&acc)[MT][DPAD / 8][4],
                                                   const float (&m)[MT][2], const float (&l)[MT][2],
                                                   long long head_row0, int row0, int row_end,
                                                   int lane) {
#pragma unroll
    for (int t = 0; t < MT; ++t) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = row0 + 16 * t + (lane >> 2) + 8 * r;
            if (row >= row_end) continue;
            const long long g = head_row0 + row;
            if ((lane & 3) == 0) {
                st.m[g] = m[t][r];
                st.l[g] = l[t][r];
            }
#pragma unroll
            for (int n = 0; n < DPAD / 8; ++n) {
                if (n * 8 >= HEAD_DIM) continue;
                float* a = st.acc + g * HEAD_DIM + n * 8 + 2 * (lane & 3);
                a[0] = acc[t][n][2 * r];
                a[1] = acc[t][n][2 * r + 1];
            }
        }
    }
}

// The online-softmax loop of one CTA (Algorithm 1's inner loop over the K/V blocks of `span`).
// kRing = false is flash2_fwd (the state is never touched: one key range, so the CTA starts
// empty and finishes); kRing = true reads and writes `st` as the ring step says.
template <bool kRing>
__device__ __forceinline__ void
flash2_attend(const attn_t* __restrict__ q, const attn_t* __restrict__ k, const attn_t* __restrict__ v,
              attn_t* __restrict__ o, float* __restrict__ lse, int n_q, int n_k, int heads,
              int kv_group, float scale, int causal,
              const int* __restrict__ seed, int threshold, float inv_keep,
              const flash2_span span, const flash2_ring_state st) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    attn_t* q_s = reinterpret_cast<attn_t*>(smem_raw);           // Q_i: BLOCK_Q x DPAD
    attn_t* k_s = q_s + BLOCK_Q * DPAD;                          // K_j: BLOCK_K x DPAD
    attn_t* v_s = k_s + BLOCK_K * DPAD;                          // V_j: BLOCK_K x DPAD

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int r0 = span.r0;                                    // first query row of the CTA
    const int bh = blockIdx.y;                                 // batch * heads + head
    const int kv_bh = (bh / heads) * (heads / kv_group) + (bh % heads) / kv_group;
    const attn_t* q_h = q + (long long)bh * n_q * HEAD_DIM;
    const attn_t* k_h = k + (long long)kv_bh * n_k * HEAD_DIM;
    const attn_t* v_h = v + (long long)kv_bh * n_k * HEAD_DIM;
#if ATTN_DROPOUT
    // a ring step never applies dropout (the ring port refuses it), even in a dropout build
    constexpr bool kDropout = !kRing;
    const unsigned long long seed_mix = kDropout ? attn_dropout_seed_mix(seed) : 0ull;
    const long long head_row0 = (long long)bh * n_q;           // the mask indexes (bh, i, j)
#endif

    // Keys visible to the CTA's last row bound the K/V loop (causal: blocks above the
    // diagonal are skipped, as the simulator's loop does).
    const int r1 = min(r0 + BLOCK_Q, span.row_end);
    const int shift = n_k - n_q;
    const int key_end = causal ? max(span.key_lo, min(span.key_hi, r1 + shift)) : span.key_hi;
    const int n_blocks = (key_end - span.key_lo + BLOCK_K - 1) / BLOCK_K;

    // -- prologue: Q_i, K_0, V_0 -> SRAM (three commit groups) --
    attn_load_tile_async<BLOCK_Q, DPAD, NTHREADS>(q_s, q_h, r0, span.row_end, HEAD_DIM, tid);
    attn_cp_async_commit();
    if (n_blocks > 0)
        attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(k_s, k_h, span.key_lo, span.key_hi, HEAD_DIM, tid);
    attn_cp_async_commit();
    if (n_blocks > 0)
        attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(v_s, v_h, span.key_lo, span.key_hi, HEAD_DIM, tid);
    attn_cp_async_commit();

    float acc[MT][DPAD / 8][4];                                // un-normalized O_i rows
    float m[MT][2], l[MT][2];                                  // running max (base 2), sum
#pragma unroll
    for (int t = 0; t < MT; ++t) {
#pragma unroll
        for (int n = 0; n < DPAD / 8; ++n) acc[t][n][0] = acc[t][n][1] = acc[t][n][2] = acc[t][n][3] = 0.f;
        m[t][0] = m[t][1] = ATTN_NEG_INF;
        l[t][0] = l[t][1] = 0.f;
    }
    const float scale_log2 = scale * ATTN_LOG2E;
    const int wrow = warp * WARP_ROWS;                         // the warp's rows in the tile
    if constexpr (kRing) {
        if (!st.first) flash2_load_state(st, acc, m, l, (long long)bh * n_q, r0 + wrow,
                                         span.row_end, lane);
    }

    for (int j = 0; j < n_blocks; ++j) {
        const int c0 = span.key_lo + j * BLOCK_K;
        attn_cp_async_wait<1>();                               // Q_i and K_j have landed
        __syncthreads();
#if ATTN_DROPOUT
        // Z of the warp's rows, drawn before S exists: the hashing then shares the registers
        // only with the O accumulator (no new spills; docs/gpu.md)
        AttnKeepBits<BLOCK_K> keep[MT];
        if constexpr (kDropout) {
#pragma unroll
            for (int t = 0; t < MT; ++t)
                keep[t].draw(seed_mix, head_row0, r0 + wrow + 16 * t, c0, n_k, threshold, lane);
        }
#endif
        float s[MT][BLOCK_K / 8][4];
        attn_warp_qk_mt<MT, BLOCK_K, DPAD>(s, q_s, k_s, wrow, lane);  // S = Q_i K_jᵀ
        __syncthreads();                                       // every warp is done with K_j
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(k_s, k_h, c0 + BLOCK_K, span.key_hi, HEAD_DIM, tid);
        attn_cp_async_commit();                                // (possibly empty) group K_{j+1}
        const bool ragged = c0 + BLOCK_K > span.key_hi;
        const bool partial = causal && (min(c0 + BLOCK_K, span.key_hi) - 1 > r0 + shift);
#pragma unroll
        for (int t = 0; t < MT; ++t) {
            if (ragged || partial)
                attn_warp_mask<BLOCK_K>(s[t], r0 + wrow + 16 * t, c0, span.key_hi, shift,
                                        causal != 0, lane);
            // -- update m_i and l_i, P = exp(S - m), rescale the accumulator --
            attn_warp_softmax<BLOCK_K, DPAD>(s[t], acc[t], m[t], l[t], scale_log2);
#if ATTN_DROPOUT
            // l_i summed the undropped P~ above; P~ ∘ Z is what P V_j reads
            if constexpr (kDropout) attn_warp_dropout<BLOCK_K>(s[t], keep[t], inv_keep);
#endif
        }
        attn_cp_async_wait<1>();                               // V_j has landed
        __syncthreads();
        attn_warp_pv_mt<MT, BLOCK_K, DPAD>(acc, s, v_s, lane); // O_i += P V_j
        __syncthreads();                                       // every warp is done with V_j
        if (j + 1 < n_blocks)
            attn_load_tile_async<BLOCK_K, DPAD, NTHREADS>(v_s, v_h, c0 + BLOCK_K, span.key_hi, HEAD_DIM, tid);
        attn_cp_async_commit();                                // group V_{j+1}
    }
    attn_cp_async_wait<0>();
    __syncthreads();                                           // Q_i landed even with no K/V block

    if constexpr (kRing) {
        if (!st.last) {                                        // the next step goes on from here
#pragma unroll
            for (int t = 0; t < MT; ++t) attn_quad_sum(l[t]);
            flash2_store_state(st, acc, m, l, (long long)bh * n_q, r0 + wrow, span.row_end, lane);
            return;
        }
    }
    // -- epilogue: O_i = acc / l, lse_i = m + log l; the warp reuses its own Q rows --
#pragma unroll
    for (int t = 0; t < MT; ++t) {
        attn_quad_sum(l[t]);
        attn_warp_o_to_smem<DPAD>(q_s, acc[t], l[t], wrow + 16 * t, lane);
    }
    __syncwarp();
    attn_store_tile<WARP_ROWS, DPAD>(o + (long long)bh * n_q * HEAD_DIM, q_s + wrow * DPAD,
                                     r0 + wrow, span.row_end, HEAD_DIM, lane, 32);
    if ((lane & 3) == 0) {
#pragma unroll
        for (int t = 0; t < MT; ++t) {
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                const int row = r0 + wrow + 16 * t + (lane >> 2) + r * 8;
                if (row < span.row_end)
                    lse[(long long)bh * n_q + row] =
                        l[t][r] > 0.f ? (m[t][r] + log2f(l[t][r])) * ATTN_LN2 : ATTN_NEG_INF;
            }
        }
    }
}

// Arguments:
//   q (B, H, n_q, d), k and v (B, H / kv_group, n_k, d): fp16, contiguous.
//   o (B, H, n_q, d) fp16, lse (B, H, n_q) fp32: outputs.
//   heads = H, kv_group = H / kv_heads, scale: softmax scale, causal: 0 or 1.
//   dropout: seed (2 int32, low half first), threshold = round(p 2²⁴), inv_keep = 1 / (1 - p)
//   (attn_dropout.cuh); read only by ATTN_DROPOUT builds (the port passes a null seed, 0 and
//   1 without dropout): one signature for both builds, as the emulator and flash1 expect.
// Grid: (ceil(n_q / BLOCK_Q), B * H); block: NTHREADS = 32 NWARPS; dynamic shared memory:
// (BLOCK_Q + 2 BLOCK_K) * DPAD * 2 bytes.
extern "C" __global__ void __launch_bounds__(NTHREADS, MIN_CTAS_PER_SM)
flash2_fwd(const attn_t* __restrict__ q, const attn_t* __restrict__ k, const attn_t* __restrict__ v,
           attn_t* __restrict__ o, float* __restrict__ lse, int n_q, int n_k, int heads,
           int kv_group, float scale, int causal,
           const int* __restrict__ seed, int threshold, float inv_keep) {
    flash2_attend<false>(q, k, v, o, lse, n_q, n_k, heads, kv_group, scale, causal, seed,
                         threshold, inv_keep, flash2_span{(int)blockIdx.x * BLOCK_Q, n_q, 0, n_k},
                         flash2_ring_state{nullptr, nullptr, nullptr, true, true});
}

// ring_step — one step of Ring Attention (Liu, Zaharia, Abbeel 2023, arXiv 2310.01889,
// Algorithm 1) on one GPU, the port of algorithms/ring.py: device `device0 + blockIdx.z` of a
// ring of `devices` attends its query rows [i c, (i + 1) c) (c = rows_per_device, clipped to
// n_q) against the K/V block that visits it at step `step`, the block of device
// (i - step) mod P (keys_per_device keys each). The K/V block is read in place from k and v:
// on one GPU nothing travels, so the link's transfers are not part of what this measures.
// Between steps the running acc, m, l stay in HBM (acc_state (B, H, n_q, d), m_state and
// l_state (B, H, n_q), fp32), as the simulator counts them: step 0 starts empty, the last
// step writes o and lse. Causal: the mask is the global one (bottom-right aligned), so a
// block past a device's rows is skipped, as the simulator does.
// Grid: (ceil(rows / BLOCK_Q), B * H, devices covered); the port times the simulated device
// alone (grid z = 1) and computes the other devices' rows once, untimed (z = devices).
// No dropout (the ring port refuses it; in an ATTN_DROPOUT build of this file the step
// skips the mask, kDropout above).
extern "C" __global__ void __launch_bounds__(NTHREADS, MIN_CTAS_PER_SM)
ring_step(const attn_t* __restrict__ q, const attn_t* __restrict__ k, const attn_t* __restrict__ v,
          attn_t* __restrict__ o, float* __restrict__ lse, float* __restrict__ acc_state,
          float* __restrict__ m_state, float* __restrict__ l_state, int n_q, int n_k, int heads,
          int kv_group, float scale, int causal, int devices, int rows_per_device,
          int keys_per_device, int device0, int step) {
    const int device = device0 + blockIdx.z;
    const int q_lo = min(n_q, device * rows_per_device);
    const int q_hi = min(n_q, q_lo + rows_per_device);
    const int r0 = q_lo + blockIdx.x * BLOCK_Q;
    if (r0 >= q_hi) return;                 // a CTA of the widest grid past this device's rows
    const int visiting = (device - step + devices) % devices;
    const int k_lo = min(n_k, visiting * keys_per_device);
    const int k_hi = min(n_k, k_lo + keys_per_device);
    flash2_attend<true>(q, k, v, o, lse, n_q, n_k, heads, kv_group, scale, causal, nullptr, 0,
                        1.f, flash2_span{r0, q_hi, k_lo, k_hi},
                        flash2_ring_state{acc_state, m_state, l_state, step == 0,
                                          step == devices - 1});
}
