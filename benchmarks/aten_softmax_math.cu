// The per-element work of PyTorch's row softmax (aten/src/ATen/native/cuda/SoftMax.cu and
// PersistentSoftmax.cuh), written out so that its SASS can be read: fp16 in and out, fp32
// inside, std::exp and '/' as ATen writes them, built as PyTorch builds it (no
// --use_fast_math). benchmarks/aten_softmax_sass.py compiles it and counts the instructions
// per element; algorithms/standard/aten_softmax.py prices the library routines with them.
#include <cuda_fp16.h>
#include <math.h>

// the block kernel's vector load: ILP = sizeof(float4) / sizeof(half) = 8 elements
struct alignas(16) Half8 { __half v[8]; };

// a CTA a row (rows longer than 1024 elements): pass 1, the row's max
extern "C" __global__ void block_max_pass(float* out, const Half8* row, int vectors) {
  float m = -INFINITY;
  for (int o = threadIdx.x; o < vectors; o += blockDim.x) {
    Half8 x = row[o];
#pragma unroll
    for (int j = 0; j < 8; ++j) m = fmaxf(m, __half2float(x.v[j]));
  }
  out[threadIdx.x] = m;
}

// pass 2, the sum of std::exp(x - max)
extern "C" __global__ void block_sum_pass(float* out, const Half8* row, int vectors, float mx) {
  float s = 0.f;
  for (int o = threadIdx.x; o < vectors; o += blockDim.x) {
    Half8 x = row[o];
#pragma unroll
    for (int j = 0; j < 8; ++j) s += std::exp(__half2float(x.v[j]) - mx);
  }
  out[threadIdx.x] = s;
}

// pass 3, the output std::exp(x - max) / sum
extern "C" __global__ void block_output_pass(Half8* out, const Half8* row, int vectors, float mx,
                                             float sum) {
  for (int o = threadIdx.x; o < vectors; o += blockDim.x) {
    Half8 x = row[o];
    Half8 y;
#pragma unroll
    for (int j = 0; j < 8; ++j) y.v[j] = __float2half(std::exp(__half2float(x.v[j]) - mx) / sum);
    out[o] = y;
  }
}

// a warp a row (at most 1024 elements): 32 elements a lane, exp once, kept, then divided
extern "C" __global__ void warp_row(__half* dst, const __half* src) {
  constexpr int PER_LANE = 32;
  float e[PER_LANE];
  const int lane = threadIdx.x;
#pragma unroll
  for (int it = 0; it < PER_LANE; ++it) e[it] = __half2float(src[lane + it * 32]);
  float m = e[0];
#pragma unroll
  for (int it = 1; it < PER_LANE; ++it) m = m > e[it] ? m : e[it];
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    float v = __shfl_xor_sync(0xffffffff, m, o);
    m = m > v ? m : v;
  }
  float s = 0.f;
#pragma unroll
  for (int it = 0; it < PER_LANE; ++it) {
    e[it] = std::exp(e[it] - m);
    s += e[it];
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffff, s, o);
#pragma unroll
  for (int it = 0; it < PER_LANE; ++it) dst[lane + it * 32] = __float2half(e[it] / s);
}
