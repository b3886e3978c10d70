// attn_dropout.cuh — attention dropout's keep mask, bit for bit the simulator's
// (algorithms/kernels/dropout.py), for the ports that apply --dropout (standard_bwd.cu's framework
// dropout kernels, flash1_fwd.cu, flash1_bwd.cu, flash2_fwd.cu and flash2_bwd.cu's on-chip Z).
//
// Entry (bh = b·H + h, query i, key j) is kept iff the top HASH_BITS = 24 bits of
// splitmix64(((bh N_q + i) N_k + j) ^ splitmix64(seed)) are >= threshold = round(p 2²⁴), and
// Z = kept / (1 − p) (FlashAttention, arXiv 2205.14135, Algorithm 2 line 14). The simulator's
// stand-in for Philox bits: the same mask in the forward, the backward and the float64
// reference, so executed outputs are checked exactly. The seed (64-bit) travels as two int32
// halves, low first (algorithms/ports/backward.py dropout_seed).
#pragma once

// splitmix64's finalizer, as algorithms/kernels/dropout.py _splitmix64 (64-bit wrapping arithmetic).
__device__ __forceinline__ unsigned long long attn_splitmix64(unsigned long long x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// splitmix64 of the seed given as two int32 halves (low first).
__device__ __forceinline__ unsigned long long attn_dropout_seed_mix(const int* seed) {
    return attn_splitmix64(static_cast<unsigned long long>(static_cast<unsigned>(seed[0]))
                           | (static_cast<unsigned long long>(static_cast<unsigned>(seed[1])) << 32));
}

// Is entry `idx` = (bh N_q + i) N_k + j kept?
__device__ __forceinline__ bool attn_dropout_keeps(unsigned long long seed_mix, long long idx,
                                                   int threshold) {
    return (attn_splitmix64(static_cast<unsigned long long>(idx) ^ seed_mix) >> 40)
           >= static_cast<unsigned long long>(threshold);
}

// Z of one C-fragment entry of a warp's 16-row tile: row `row` (within the head: i), key
// `key` (j); `head_row0` = bh N_q.
__device__ __forceinline__ float attn_dropout_z(unsigned long long seed_mix, long long head_row0,
                                                int row, int key, int n_k, int threshold,
                                                float inv_keep) {
    return attn_dropout_keeps(seed_mix, (head_row0 + row) * n_k + key, threshold) ? inv_keep : 0.f;
}

// Is C-fragment entry e of 8-key tile n kept? The m16n8 accumulator layout: lane holds rows
// (lane >> 2) + 8 (e >> 1) of the 16-row tile starting at query `row0`, and keys
// 2 (lane & 3) + (e & 1) of the tile starting at `key0` + 8 n (attn_common.cuh's fragments).
__device__ __forceinline__ bool attn_dropout_frag_keeps(unsigned long long seed_mix,
                                                        long long head_row0, int row0, int key0,
                                                        int n, int e, int n_k, int threshold,
                                                        int lane) {
    return attn_dropout_keeps(seed_mix,
                              (head_row0 + row0 + (lane >> 2) + 8 * (e >> 1)) * n_k
                                  + key0 + n * 8 + 2 * (lane & 3) + (e & 1),
                              threshold);
}

// Keep bits of a warp's 16-row tile of kN keys (C fragments), for kernels whose registers are
// tight (flash2_fwd.cu, flash2_bwd.cu): bit 4 (n % 8) + e of word n / 8 is entry [n][e]. The
// 8-key tiles of a word are hashed in a rolled loop, 4 entries at a time: fully unrolled,
// ptxas interleaves every hash's 64-bit temporaries and spills next to the S and O
// fragments (docs/gpu.md); the words are 1 register per 64 keys.
template <int kN>
struct AttnKeepBits {
    static constexpr int kWords = (kN / 8 + 7) / 8;
    unsigned w[kWords];

    __device__ __forceinline__ void draw(unsigned long long seed_mix, long long head_row0,
                                         int row0, int key0, int n_k, int threshold, int lane) {
#pragma unroll
        for (int i = 0; i < kWords; ++i) {
            unsigned word = 0u;
            const int n_end = (8 * i + 8 < kN / 8) ? 8 * i + 8 : kN / 8;
#pragma unroll 1
            for (int n = 8 * i; n < n_end; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    word |= static_cast<unsigned>(attn_dropout_frag_keeps(
                                seed_mix, head_row0, row0, key0, n, e, n_k, threshold, lane))
                            << (4 * (n - 8 * i) + e);
            w[i] = word;
        }
    }
    // with n, e compile-time constants (unrolled loops) this is a shift and an and
    __device__ __forceinline__ bool kept(int n, int e) const {
        return (w[n >> 3] >> (4 * (n & 7) + e)) & 1u;
    }
};

// P~ ∘ Z in place for a warp's 16-row tile of kN keys (C fragments), from its keep bits.
// Keys past n_k and masked entries are already 0 and rows past n_q are never stored, so the
// hash index those entries got (which aliases another entry's) does not matter.
template <int kN>
__device__ __forceinline__ void attn_warp_dropout(float (&s)[kN / 8][4], const AttnKeepBits<kN>& keep,
                                                  float inv_keep) {
#pragma unroll
    for (int n = 0; n < kN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = keep.kept(n, e) ? s[n][e] * inv_keep : 0.f;
}
