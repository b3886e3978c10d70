// ATen's elementwise loop over non-contiguous operands, written out for one binary op in
// fp16, as PyTorch builds it (aten/src/ATen/native/cuda/CUDALoops.cuh: launch_legacy_kernel
// <128, 4> with an OffsetCalculator over the operands' strides; the add's functor computes
// in fp32). Built by benchmarks/aten_elementwise_sass.py, which reads off the SASS in which
// order a thread issues its loads and stores: whether the next element's loads wait for this
// element's store (its operands are char pointers the store may alias).
#include <cuda_fp16.h>
#include <stdint.h>

constexpr int kMaxDims = 25;             // TensorIterator's MAX_DIMS
constexpr int kThreads = 128;            // launch_legacy_kernel<128, ...>
constexpr int kElementsPerThread = 4;    // ... <..., 4>: 2-byte outputs

struct FastDivider {                     // division by a magic number, as IntDivider does
  uint32_t divisor, magic, shift;
  __device__ uint32_t div(uint32_t n) const { return (__umulhi(n, magic) + n) >> shift; }
};

struct Strides3 {                        // the output and two inputs, in bytes
  int dims;
  FastDivider sizes[kMaxDims];
  uint32_t strides[kMaxDims][3];
  __device__ void offsets(uint32_t linear, uint32_t out[3]) const {
    out[0] = out[1] = out[2] = 0;
#pragma unroll
    for (int dim = 0; dim < kMaxDims; ++dim) {
      if (dim == dims) break;
      uint32_t quotient = sizes[dim].div(linear);
      uint32_t index = linear - quotient * sizes[dim].divisor;
      linear = quotient;
#pragma unroll
      for (int operand = 0; operand < 3; ++operand) out[operand] += index * strides[dim][operand];
    }
  }
};

struct Operands { char* data[3]; };     // output, self, other: no restrict on what they point to

__global__ void __launch_bounds__(kThreads, 4)
legacy_add_fp16(int n, Strides3 strides, Operands ops, float alpha) {
  int linear = kThreads * kElementsPerThread * blockIdx.x + threadIdx.x;
#pragma unroll
  for (int i = 0; i < kElementsPerThread; ++i) {
    if (linear < n) {
      uint32_t off[3];
      strides.offsets(linear, off);
      float self = __half2float(*reinterpret_cast<const __half*>(ops.data[1] + off[1]));
      float other = __half2float(*reinterpret_cast<const __half*>(ops.data[2] + off[2]));
      *reinterpret_cast<__half*>(ops.data[0] + off[0]) = __float2half(self + alpha * other);
      linear += kThreads;
    }
  }
}
