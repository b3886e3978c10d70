// attn_dropout.cuh — attention dropout's keep mask, bit for bit the simulator's
// (algorithms/dropout.py), for the ports that apply --dropout (standard_bwd.cu's framework
// dropout kernels, flash1_fwd.cu and flash1_bwd.cu's on-chip Z).
//
// Entry (bh = b·H + h, query i, key j) is kept iff the top HASH_BITS = 24 bits of
// splitmix64(((bh N_q + i) N_k + j) ^ splitmix64(seed)) are >= threshold = round(p 2²⁴), and
// Z = kept / (1 − p) (FlashAttention, arXiv 2205.14135, Algorithm 2 line 14). The simulator's
// stand-in for Philox bits: the same mask in the forward, the backward and the float64
// reference, so executed outputs are checked exactly. The seed (64-bit) travels as two int32
// halves, low first (algorithms/ports/backward.py dropout_seed).
#pragma once

// splitmix64's finalizer, as algorithms/dropout.py _splitmix64 (64-bit wrapping arithmetic).
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
