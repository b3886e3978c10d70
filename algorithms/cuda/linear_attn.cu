// linear_attn.cu — linear attention (Katharopoulos et al. 2020, "Transformers are RNNs",
// arXiv 2006.16236, §3.2, eq. 4-6), non-causal, the port of algorithms/linear.py.
//
// What it does: with the feature map φ(x) = elu(x) + 1 (positive), out_i = φ(q_i)ᵀ S /
// (φ(q_i)ᵀ z + eps) where S = Σ_j φ(k_j) v_jᵀ (d x d_v) and z = Σ_j φ(k_j) (d). Two kernels:
//   linear_kv_state  grid (1, B·H): one CTA per head walks the keys CHUNK rows at a time,
//                    staging K_j (φ applied on the way) and V_j in shared memory and
//                    accumulating S and z in fp32 registers; it writes them to HBM once
//                    (through atomicAdd on a zeroed state, so a grid with more CTAs per head
//                    may split the keys). Query head h reads kv head h / kv_group.
//   linear_apply     grid (ceil(n_q / ROWS), B·H): each CTA loads its head's S and z
//                    (fp32) into shared memory once and computes ROWS output rows.
// The N x N attention matrix never exists; traffic is Θ(N d + d²) per head.
//
// Tile sizes (compile-time defines from algorithms/ports.py): CHUNK = ROWS = plan.block (B,
// the rows of a K/V or Q tile), HEAD_DIM = d (= d_v; φ keeps the width, m = d). Shared memory:
// state CTA CHUNK x HEAD_DIM x 4 B x 2 (φ(K), V in fp32); apply CTA (HEAD_DIM² + HEAD_DIM) x 4 B
// + ROWS x HEAD_DIM x 4 B (φ(Q) rows). Arithmetic on CUDA cores in fp32: linear attention is
// memory-bound at these sizes, so no tensor cores. Both kernels use dynamic shared memory
// (the sizes above), set by the launcher.
// Storage type: fp16, or bf16 when compiled with -DATTN_BF16=1 (ports.py adds it for
// --dtype bf16; attn_common.cuh's attn_t). "fp16" in the comments here means that 16-bit type.
#include "attn_common.cuh"

#ifndef CHUNK
#define CHUNK 64
#endif
#ifndef ROWS
#define ROWS 32
#endif
#ifndef HEAD_DIM
#define HEAD_DIM 64
#endif
#define THREADS 256

static_assert(HEAD_DIM % 8 == 0 && HEAD_DIM <= 128, "HEAD_DIM must be a multiple of 8, <= 128");

__device__ __forceinline__ float phi(float x) { return x > 0.f ? x + 1.f : __expf(x); }

#define STATE_PER_THREAD ((HEAD_DIM * HEAD_DIM + THREADS - 1) / THREADS)

// k, v (B, G, n_k, d) fp16; state (B·H, d, d) fp32 and z (B·H, d) fp32, zero on entry.
// Grid (n_chunk_ctas, B·H): CTA x walks chunks x, x + gridDim.x, ... of CHUNK key rows
// (gridDim.x = 1: one CTA per head, as the simulator's ``linear_state`` kernel; more CTAs
// split the keys and meet through the atomics). Query head h reads kv head h / kv_group.
extern "C" __global__ void __launch_bounds__(THREADS)
linear_kv_state(const attn_t* __restrict__ k, const attn_t* __restrict__ v,
                float* __restrict__ state, float* __restrict__ z, int n_k, int heads,
                int kv_group) {
    extern __shared__ __align__(16) float smem_f[];            // dynamic: 2 CHUNK HEAD_DIM floats
    float (*phik_s)[HEAD_DIM] = reinterpret_cast<float (*)[HEAD_DIM]>(smem_f);
    float (*v_s)[HEAD_DIM] = reinterpret_cast<float (*)[HEAD_DIM]>(smem_f + CHUNK * HEAD_DIM);
    const int bh = blockIdx.y, tid = threadIdx.x;
    const int kv_bh = (bh / heads) * (heads / kv_group) + (bh % heads) / kv_group;
    float part[STATE_PER_THREAD];                              // this thread's entries of S
#pragma unroll
    for (int e = 0; e < STATE_PER_THREAD; ++e) part[e] = 0.f;
    float zs = 0.f;                                            // z[tid] (tid < HEAD_DIM)
    for (int row0 = blockIdx.x * CHUNK; row0 < n_k; row0 += gridDim.x * CHUNK) {
        const int rows = min(CHUNK, n_k - row0);
        const attn_t* k_h = k + ((long long)kv_bh * n_k + row0) * HEAD_DIM;
        const attn_t* v_h = v + ((long long)kv_bh * n_k + row0) * HEAD_DIM;
        __syncthreads();                                       // previous chunk consumed
        for (int idx = tid; idx < CHUNK * HEAD_DIM; idx += THREADS) {   // K_j, V_j -> SRAM
            const int r = idx / HEAD_DIM, c = idx % HEAD_DIM;
            phik_s[r][c] = r < rows ? phi(attn_to_f32(k_h[idx])) : 0.f;
            v_s[r][c] = r < rows ? attn_to_f32(v_h[idx]) : 0.f;
        }
        __syncthreads();
        // S[a][b] += Σ_r φ(k_r)[a] v_r[b]; thread t owns entries t, t + THREADS, ...
        for (int r = 0; r < rows; ++r) {
#pragma unroll
            for (int e = 0; e < STATE_PER_THREAD; ++e) {
                const int idx = tid + e * THREADS;
                if (idx < HEAD_DIM * HEAD_DIM) part[e] += phik_s[r][idx / HEAD_DIM] * v_s[r][idx % HEAD_DIM];
            }
        }
        if (tid < HEAD_DIM)                                    // z[a] += Σ_r φ(k_r)[a]
            for (int r = 0; r < rows; ++r) zs += phik_s[r][tid];
    }
    float* st = state + (long long)bh * HEAD_DIM * HEAD_DIM;   // S, z -> HBM once
#pragma unroll
    for (int e = 0; e < STATE_PER_THREAD; ++e) {
        const int idx = tid + e * THREADS;
        if (idx < HEAD_DIM * HEAD_DIM) atomicAdd(st + idx, part[e]);
    }
    if (tid < HEAD_DIM) atomicAdd(z + (long long)bh * HEAD_DIM + tid, zs);
}

// q (B·H, n_q, d) fp16 -> o (B·H, n_q, d) fp16, with the state of the same head.
// Grid (ceil(n_q / ROWS), B·H). A row whose denominator is 0 outputs zeros.
extern "C" __global__ void __launch_bounds__(THREADS)
linear_apply(const attn_t* __restrict__ q, const float* __restrict__ state,
             const float* __restrict__ z, attn_t* __restrict__ o, int n_q, float eps) {
    // dynamic: (HEAD_DIM² + HEAD_DIM + ROWS·HEAD_DIM + ROWS) floats
    extern __shared__ __align__(16) float smem_f[];
    float (*s_s)[HEAD_DIM] = reinterpret_cast<float (*)[HEAD_DIM]>(smem_f);
    float* z_s = smem_f + HEAD_DIM * HEAD_DIM;
    float (*phiq_s)[HEAD_DIM] = reinterpret_cast<float (*)[HEAD_DIM]>(z_s + HEAD_DIM);
    float* den_s = smem_f + HEAD_DIM * HEAD_DIM + HEAD_DIM + ROWS * HEAD_DIM;
    const int bh = blockIdx.y, tid = threadIdx.x;
    const int row0 = blockIdx.x * ROWS;
    const int rows = min(ROWS, n_q - row0);
    const float* st = state + (long long)bh * HEAD_DIM * HEAD_DIM;
    for (int idx = tid; idx < HEAD_DIM * HEAD_DIM; idx += THREADS)   // S, z -> SRAM once
        s_s[idx / HEAD_DIM][idx % HEAD_DIM] = st[idx];
    if (tid < HEAD_DIM) z_s[tid] = z[(long long)bh * HEAD_DIM + tid];
    const attn_t* q_h = q + ((long long)bh * n_q + row0) * HEAD_DIM;
    for (int idx = tid; idx < ROWS * HEAD_DIM; idx += THREADS) {
        const int r = idx / HEAD_DIM;
        phiq_s[r][idx % HEAD_DIM] = r < rows ? phi(attn_to_f32(q_h[idx])) : 0.f;
    }
    __syncthreads();
    for (int r = tid; r < ROWS; r += THREADS) {                // φ(q_i)ᵀ z + eps
        float den = eps;
        for (int a = 0; a < HEAD_DIM; ++a) den += phiq_s[r][a] * z_s[a];
        den_s[r] = den;
    }
    __syncthreads();
    attn_t* o_h = o + ((long long)bh * n_q + row0) * HEAD_DIM;
    for (int idx = tid; idx < rows * HEAD_DIM; idx += THREADS) {      // φ(q_i)ᵀ S / den
        const int r = idx / HEAD_DIM, c = idx % HEAD_DIM;
        float num = 0.f;
        for (int a = 0; a < HEAD_DIM; ++a) num += phiq_s[r][a] * s_s[a][c];
        o_h[idx] = attn_from_f32(den_s[r] != 0.f ? num / den_s[r] : 0.f);
    }
}
