// cuda_emu.h — a small CPU emulator for the attnsim CUDA ports, for tests without a GPU.
//
// It runs a kernel's CUDA C++ source as ordinary C++: every CUDA thread of a CTA is a green
// thread on one OS thread (its stack made by ucontext; its switches are _setjmp/_longjmp,
// which unlike swapcontext make no system call to save the signal mask); __syncthreads,
// __syncwarp and the warp-collective operations (shuffles, ldmatrix, mma.sync) are barriers
// at which the green threads trade places. The PTX wrappers of attn_common.cuh are replaced
// (ATTN_PTX_EMULATION) by versions written from the PTX ISA's fragment layouts:
//   ldmatrix .m8n8.x4: lane l supplies row (l % 8) of matrix (l / 8) and receives, from each
//     matrix, row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1 (.trans: column l / 4, rows
//     2 (l % 4) and +1);
//   mma.m16n8k16 row.col f32.f16.f16.f32, g = l / 4, t = l % 4: A regs (row g, k 2t..2t+1),
//     (g + 8, 2t..), (g, 2t + 8..), (g + 8, 2t + 8..); B regs (k 2t..2t+1, n g), (k 2t + 8.., n g);
//     C/D (row g, cols 2t, 2t + 1), (row g + 8, cols 2t, 2t + 1).
// cp.async is asynchronous as on the GPU: a copy lands in shared memory only when its thread
// waits for its group (cp.async.wait_group), so a missing wait shows up as NaN data.
// Shared memory (``__shared__``) is thread_local storage: all green threads of the CTA share
// it, CTAs run one after another.
// Hazard checks on the dynamic shared memory moved by cp.async and read by ldmatrix (the
// tiles of the attention kernels), in "epochs" between two __syncthreads:
//   read-after-write: ldmatrix reads bytes that a copy landed in the current epoch;
//   write-after-read: a copy lands on bytes another warp read since the copy was issued
//     (or earlier in the epoch it was issued in).
// A hazard stops the run with exit status 8.
#pragma once
#include <csetjmp>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ thread_local
#define __align__(n) __attribute__((aligned(n)))

struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline void atomicAdd(float* p, float v);      // defined at the end: shared memory is tracked

// ---- the storage type and conversions of attn_common.cuh: fp16, or bf16 with ATTN_BF16 -------
struct attn_t { uint16_t x; };

#ifdef ATTN_BF16
inline float attn_to_f32(attn_t h) { return __int_as_float(int(uint32_t(h.x) << 16)); }

inline attn_t attn_from_f32(float f) {                  // round to nearest even, NaN stays NaN
    uint32_t b;
    std::memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return {uint16_t((b >> 16) | 0x40)};
    b += 0x7fffu + ((b >> 16) & 1u);
    return {uint16_t(b >> 16)};
}
#else

inline float attn_to_f32(attn_t h) {
    const uint32_t sign = (h.x & 0x8000u) << 16, exp = (h.x >> 10) & 0x1f, man = h.x & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {                                   // subnormal: normalize
            int e = -1;
            uint32_t m = man;
            do { m <<= 1; ++e; } while (!(m & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (m & 0x3ff) << 13;
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | man << 13;
    else bits = sign | (exp + 127 - 15) << 23 | man << 13;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline attn_t attn_from_f32(float f) {                  // round to nearest even
    uint32_t b;
    std::memcpy(&b, &f, 4);
    const uint16_t sign = (b >> 16) & 0x8000;
    const uint32_t abs = b & 0x7fffffffu;
    if (abs >= 0x7f800000u) return {uint16_t(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0))};
    if (abs >= 0x477ff000u) return {uint16_t(sign | 0x7c00)};          // rounds to inf
    if (abs < 0x33000001u) return {sign};                               // rounds to 0
    int exp = int(abs >> 23) - 127 + 15;
    uint32_t man = (abs & 0x7fffff) | 0x800000;
    int shift = 13;
    if (exp <= 0) { shift += 1 - exp; exp = 0; }
    uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half_ulp = 1u << (shift - 1);
    if (rem > half_ulp || (rem == half_ulp && (h & 1))) ++h;
    uint32_t out = exp == 0 ? h : ((uint32_t(exp) << 10) + (h - 0x400));
    if (exp == 0) out = h;                        // subnormal (h < 0x400) or rounded up to 0x400
    return {uint16_t(sign | out)};
}
#endif
inline unsigned attn_pack2(float lo, float hi) {
    return attn_from_f32(lo).x | unsigned(attn_from_f32(hi).x) << 16;
}
struct attn_f2;
inline attn_f2 attn_unpack2(unsigned v);   // defined after attn_common.cuh's attn_f2

// ---- green threads ------------------------------------------------------------------------------
namespace emu {

struct Barrier { int count = 0; unsigned gen = 0; };

struct Thread {
    ucontext_t ctx;                 // its first entry, on its own stack
    jmp_buf resume;                 // where it waits at a barrier
    bool started = false;
    bool done = false;
    Barrier* waiting = nullptr;
    unsigned wait_gen = 0;
    unsigned tid = 0;
};

struct WarpScratch {
    const void* ptr[32];
    unsigned a[32][4];
    unsigned b[32][2];
    float f[32];
    int i[32];          // __match_any_sync's values
};

inline jmp_buf sched;                   // the scheduler, between two turns of the threads
inline std::vector<Thread> threads;
inline int current = 0;
inline Barrier block_barrier;
inline std::vector<Barrier> warp_barriers;
inline std::vector<WarpScratch> scratch;
inline std::function<void()> body;
// Green-thread stacks, kept from CTA to CTA: allocated once (uninitialized), not zero-filled
// for every thread of every CTA
constexpr size_t STACK_BYTES = 256 * 1024;
inline std::vector<std::unique_ptr<char[]>> stacks;

inline int lane() { return threads[current].tid & 31; }
inline int warp() { return threads[current].tid >> 5; }

inline void wait(Barrier& b, int n) {
    const unsigned gen = b.gen;
    if (++b.count == n) { b.count = 0; ++b.gen; return; }
    Thread& t = threads[current];
    t.waiting = &b;
    t.wait_gen = gen;
    if (!_setjmp(t.resume)) _longjmp(sched, 1);   // to the scheduler; it resumes us here
}
inline void warp_sync() { wait(warp_barriers[warp()], 32); }

// ---- shared-memory hazard tracking (dynamic shared memory only) ----
constexpr unsigned NEVER = 0xffffffffu;
inline unsigned epoch = 0;                      // completed __syncthreads of this CTA
inline unsigned char* smem_base = nullptr;      // set by the harness
inline size_t smem_size = 0;
inline std::vector<unsigned> w_epoch, r_epoch;  // per byte: last write (copy landed or store) / read
inline std::vector<int> r_warp, w_warp;         // ... and its warp (w_warp -1: a cp.async copy)
inline size_t touched = 0;                      // bytes [0, touched) noted since the last reset

// Every CTA starts with no byte noted. Only the bytes the last CTA noted are reset: the whole
// 4 x 4 bytes a byte of tracking is filled once, not once a CTA (that fill used to be most of
// an emulated launch's time).
inline void reset_hazards() {
    epoch = 0;
    if (w_epoch.size() != smem_size) {
        w_epoch.assign(smem_size, NEVER);
        r_epoch.assign(smem_size, NEVER);
        r_warp.assign(smem_size, -1);
        w_warp.assign(smem_size, -1);
    } else {
        std::fill_n(w_epoch.begin(), touched, NEVER);
        std::fill_n(r_epoch.begin(), touched, NEVER);
        std::fill_n(r_warp.begin(), touched, -1);
        std::fill_n(w_warp.begin(), touched, -1);
    }
    touched = 0;
}
inline long smem_offset(const void* p) {
    const unsigned char* c = static_cast<const unsigned char*>(p);
    return (smem_base && c >= smem_base && c < smem_base + smem_size) ? long(c - smem_base) : -1;
}
// smem_offset of an access of n bytes, which it records as touched (see reset_hazards)
inline long tracked_offset(const void* p, long n) {
    const long off = smem_offset(p);
    if (off >= 0) touched = std::max(touched, std::min(smem_size, size_t(off + n)));
    return off;
}
[[noreturn]] inline void hazard(const char* what, long off) {
    std::fprintf(stderr, "emu: shared-memory %s hazard at byte %ld (epoch %u, warp %d)\n",
                 what, off, epoch, warp());
    std::fflush(stderr); std::_Exit(8);
}
// A read of bytes written since the last barrier is a hazard, unless the reading warp stored
// them itself (a copy's landing is visible to no other thread before a barrier: always one).
inline void note_read(const void* p, long n) {
    const long off = tracked_offset(p, n);
    if (off < 0) return;
    for (long b = off; b < off + n; ++b) {
        if (w_epoch[b] == epoch && (w_warp[b] < 0 || w_warp[b] != warp()))
            hazard("read-after-write", b);
        r_epoch[b] = epoch;
        r_warp[b] = warp();
    }
}
inline void note_read16(const void* p) { note_read(p, 16); }
// A plain store (attn_st_shared*): a hazard when another warp read or wrote the bytes since
// the last barrier.
inline void note_store(const void* p, long n) {
    const long off = tracked_offset(p, n);
    if (off < 0) return;
    for (long b = off; b < off + n; ++b) {
        if (r_epoch[b] == epoch && r_warp[b] != warp()) hazard("write-after-read", b);
        if (w_epoch[b] == epoch && w_warp[b] >= 0 && w_warp[b] != warp())
            hazard("write-after-write", b);
        w_epoch[b] = epoch;
        w_warp[b] = warp();
    }
}
inline void note_write16(const void* p, unsigned issued) {
    const long off = tracked_offset(p, 16);
    if (off < 0) return;
    for (long b = off; b < off + 16; ++b) {
        if (r_epoch[b] != NEVER && r_epoch[b] >= issued && r_warp[b] != warp())
            hazard("write-after-read", b);
        w_epoch[b] = epoch;
        w_warp[b] = -1;
    }
}

// cp.async groups of each thread: copies land at cp.async.wait_group
struct Copy { unsigned char* dst; unsigned char data[16]; unsigned issued; };
inline std::vector<std::vector<Copy>> open_group;               // per thread
inline std::vector<std::vector<std::vector<Copy>>> committed;   // per thread, oldest first

}  // namespace emu

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

inline void __syncthreads() {
    const unsigned gen = emu::block_barrier.gen;
    emu::wait(emu::block_barrier, int(blockDim.x * blockDim.y * blockDim.z));
    if (emu::epoch == gen) emu::epoch = gen + 1;  // the first thread past the barrier advances it
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_sync(); }
inline float __shfl_xor_sync(unsigned, float v, int mask) {
    auto& w = emu::scratch[emu::warp()];
    w.f[emu::lane()] = v;
    emu::warp_sync();
    const float r = w.f[emu::lane() ^ mask];
    emu::warp_sync();
    return r;
}

namespace emu {
inline void trampoline() {
    body();
    threads[current].done = true;
    _longjmp(sched, 1);                           // never returns: its stack is abandoned
}

// Run one CTA: blockDim threads of `kernel_body` until all finish; abort on deadlock.
inline void run_cta(const std::function<void()>& kernel_body) {
    const unsigned n = blockDim.x * blockDim.y * blockDim.z;
    if (n % 32) { std::fprintf(stderr, "emu: block size %u is not whole warps\n", n); std::fflush(stderr); std::_Exit(3); }
    body = kernel_body;
    threads.assign(n, Thread{});
    warp_barriers.assign(n / 32, Barrier{});
    scratch.assign(n / 32, WarpScratch{});
    block_barrier = Barrier{};
    reset_hazards();
    open_group.assign(n, {});
    committed.assign(n, {});
    for (unsigned i = 0; i < n; ++i) {
        Thread& t = threads[i];
        t.tid = i;
        if (stacks.size() <= i) stacks.emplace_back(new char[STACK_BYTES]);
        getcontext(&t.ctx);
        t.ctx.uc_stack.ss_sp = stacks[i].get();
        t.ctx.uc_stack.ss_size = STACK_BYTES;
        t.ctx.uc_link = nullptr;
        makecontext(&t.ctx, trampoline, 0);
    }
    for (;;) {
        bool alive = false, progress = false;
        for (unsigned i = 0; i < n; ++i) {
            Thread& t = threads[i];
            if (t.done) continue;
            alive = true;
            if (t.waiting && t.waiting->gen == t.wait_gen) continue;
            t.waiting = nullptr;
            current = int(i);
            threadIdx.x = i % blockDim.x;
            threadIdx.y = (i / blockDim.x) % blockDim.y;
            threadIdx.z = i / (blockDim.x * blockDim.y);
            if (!_setjmp(sched)) {                    // a thread's turn ends with _longjmp(sched)
                if (t.started) _longjmp(t.resume, 1);
                t.started = true;
                setcontext(&t.ctx);
            }
            progress = true;
        }
        if (!alive) return;
        if (!progress) {
            std::fprintf(stderr, "emu: deadlock in block (%u, %u, %u): threads wait at a barrier "
                         "some threads never reach\n", blockIdx.x, blockIdx.y, blockIdx.z);
            std::fflush(stderr); std::_Exit(4);
        }
    }
}
}  // namespace emu

// ---- the PTX wrappers of attn_common.cuh ---------------------------------------------------------
#define ATTN_PTX_EMULATION 1

inline void attn_cp_async16(void* smem, const void* gmem, int src_bytes) {
    emu::Copy c{static_cast<unsigned char*>(smem), {}, emu::epoch};
    std::memcpy(c.data, gmem, src_bytes);         // source read at issue, zero fill past src_bytes
    emu::open_group[emu::current].push_back(c);
}
inline void attn_cp_async_commit() {
    auto& mine = emu::open_group[emu::current];
    emu::committed[emu::current].push_back(mine);
    mine.clear();
}
template <int n> inline void attn_cp_async_wait() {   // land all but the n newest groups
    auto& groups = emu::committed[emu::current];
    while (groups.size() > size_t(n)) {
        for (const emu::Copy& c : groups.front()) {
            emu::note_write16(c.dst, c.issued);
            std::memcpy(c.dst, c.data, 16);
        }
        groups.erase(groups.begin());
    }
}

// plain shared-memory accesses of attn_common.cuh, with the hazard checks
inline void attn_st_shared32(void* p, unsigned v) {
    emu::note_store(p, 4);
    std::memcpy(p, &v, 4);
}
inline void attn_st_shared_f32(float* p, float v) {
    emu::note_store(p, 4);
    *p = v;
}
inline float attn_ld_shared_f32(const float* p) {
    emu::note_read(p, 4);
    return *p;
}

inline void attn_ldmatrix_x4(unsigned r[4], const attn_t* p) {
    auto& w = emu::scratch[emu::warp()];
    const int l = emu::lane();
    w.ptr[l] = p;
    emu::note_read16(p);
    emu::warp_sync();
    for (int m = 0; m < 4; ++m) {
        const uint16_t* row = static_cast<const uint16_t*>(w.ptr[8 * m + l / 4]);
        r[m] = row[2 * (l % 4)] | unsigned(row[2 * (l % 4) + 1]) << 16;
    }
    emu::warp_sync();
}

inline void attn_ldmatrix_x4_trans(unsigned r[4], const attn_t* p) {
    auto& w = emu::scratch[emu::warp()];
    const int l = emu::lane();
    w.ptr[l] = p;
    emu::note_read16(p);
    emu::warp_sync();
    for (int m = 0; m < 4; ++m) {
        const uint16_t* r0 = static_cast<const uint16_t*>(w.ptr[8 * m + 2 * (l % 4)]);
        const uint16_t* r1 = static_cast<const uint16_t*>(w.ptr[8 * m + 2 * (l % 4) + 1]);
        r[m] = r0[l / 4] | unsigned(r1[l / 4]) << 16;
    }
    emu::warp_sync();
}

inline float emu_elem_bits(unsigned bits) { return attn_to_f32(attn_t{uint16_t(bits)}); }

inline void attn_mma16816(float d[4], const unsigned a[4], unsigned b0, unsigned b1) {
    auto& w = emu::scratch[emu::warp()];
    const int l = emu::lane();
    for (int i = 0; i < 4; ++i) w.a[l][i] = a[i];
    w.b[l][0] = b0;
    w.b[l][1] = b1;
    emu::warp_sync();
    float A[16][16], B[16][8];
    for (int L = 0; L < 32; ++L) {
        const int g = L / 4, t = L % 4;
        const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
        for (int i = 0; i < 4; ++i) {
            A[rows[i]][cols[i]] = emu_elem_bits(w.a[L][i] & 0xffff);
            A[rows[i]][cols[i] + 1] = emu_elem_bits(w.a[L][i] >> 16);
        }
        for (int i = 0; i < 2; ++i) {
            B[2 * t + 8 * i][g] = emu_elem_bits(w.b[L][i] & 0xffff);
            B[2 * t + 8 * i + 1][g] = emu_elem_bits(w.b[L][i] >> 16);
        }
    }
    emu::warp_sync();
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + (i % 2);
        float acc = d[i];
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
        d[i] = acc;
    }
}

// ---- atomics (nsa_fwd.cu's shared-memory score bins) -----------------------------------------
// atomicAdd (CUDA C++ Programming Guide, "Atomic Functions": a read-modify-write of a 32-bit
// word in global or shared memory that no other thread's access interleaves with). The green
// threads never interleave inside it, so the update itself is plain. On dynamic shared memory
// it is tracked as a write: atomics of several warps to the same bytes in one epoch are legal
// (that is what atomics are for), but a plain read or store of those bytes by another warp
// before the next __syncthreads is a hazard, as is an atomic on bytes another warp read in the
// epoch. w_warp -2 marks bytes updated by the atomics of more than one warp (every reader is
// then "another warp").
namespace emu {
inline void note_atomic(const void* p, long n) {
    const long off = tracked_offset(p, n);
    if (off < 0) return;                          // global memory: not tracked
    for (long b = off; b < off + n; ++b) {
        if (r_epoch[b] == epoch && r_warp[b] != warp()) hazard("write-after-read", b);
        const bool mine = w_epoch[b] != epoch || w_warp[b] == warp();
        w_warp[b] = mine ? warp() : -2;
        w_epoch[b] = epoch;
    }
}
}  // namespace emu

inline void atomicAdd(float* p, float v) {
    emu::note_atomic(p, 4);
    *p += v;
}

// ---- integer atomics, warp match and cross-CTA flags (reformer.cu's radix sort) -------------
// Written from the CUDA C++ Programming Guide (atomicAdd, __popc, __match_any_sync) and the
// PTX ISA (match.any.sync.b32: "the mask of threads that have the same value of a").
// Green threads change places only at barriers, so a read-modify-write runs as one step:
// atomic, as on the GPU.
inline int atomicAdd(int* p, int v) {
    emu::note_atomic(p, 4);                       // shared memory: tracked as nsa's float atomics
    const int old = *p;
    *p = old + v;
    return old;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline unsigned __match_any_sync(unsigned, int v) {
    auto& w = emu::scratch[emu::warp()];
    w.i[emu::lane()] = v;
    emu::warp_sync();
    unsigned mask = 0;
    for (int l = 0; l < 32; ++l)
        if (w.i[l] == v) mask |= 1u << l;
    emu::warp_sync();
    return mask;
}
// A flag word published for other CTAs (reformer.cu: a volatile store on the GPU).
inline void attn_st_flag(int* p, int v) { *p = v; }
// Spin until another CTA publishes the flag. CTAs run here one after another, in grid order,
// so a flag that is still 0 belongs to a CTA that has not run and never will while this one
// waits: on a GPU that would be a hang whenever the waited-for CTA is not resident. Stop with
// exit status 9 instead of spinning forever.
inline int attn_spin_wait_nonzero(const int* p) {
    if (*p != 0) return *p;
    std::fprintf(stderr, "emu: spin wait on a flag no CTA that has run has published (block "
                 "%u, %u, %u): a look-back on a CTA that has not started\n",
                 blockIdx.x, blockIdx.y, blockIdx.z);
    std::fflush(stderr);
    std::_Exit(9);
}
