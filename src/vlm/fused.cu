// Fused kernels of the decoder for a GPU (src/vlm/fused.rs says why and what each computes).
// Compiled to PTX by build.rs when the `cuda` feature is on; one block per row for the norm.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024).
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  v = lane < warps ? partial[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

// out[0..n) = x + a (rounded to T, as a separate add would round it);
// out[n..2n) = RMSNorm of that rounded sum times w, row by row (rows of `cols`).
template <typename T>
__device__ void add_rms_norm(const T *x, const T *a, const T *w, T *out, size_t n, int cols,
                             float eps) {
  const size_t row = blockIdx.x;
  const T *xr = x + row * cols;
  const T *ar = a + row * cols;
  T *sr = out + row * cols;
  T *nr = out + n + row * cols;
  float sq = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const T s = from_f<T>(to_f(xr[c]) + to_f(ar[c]));
    sr[c] = s;
    const float f = to_f(s);
    sq += f * f;
  }
  const float scale = rsqrtf(block_sum(sq) / cols + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    nr[c] = from_f<T>(scale * to_f(sr[c]) * to_f(w[c]));
  }
}

// out = silu(g) * u, computed in f32 and rounded once.
template <typename T> __device__ void silu_mul(const T *g, const T *u, T *out, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)blockDim.x * gridDim.x) {
    const float v = to_f(g[i]);
    out[i] = from_f<T>(v / (1.0f + expf(-v)) * to_f(u[i]));
  }
}

#define FUSED(T, SUFFIX)                                                                       \
  extern "C" __global__ void add_rms_norm_##SUFFIX(const T *x, const T *a, const T *w, T *out, \
                                                   size_t n, int cols, float eps) {            \
    add_rms_norm<T>(x, a, w, out, n, cols, eps);                                               \
  }                                                                                            \
  extern "C" __global__ void silu_mul_##SUFFIX(const T *g, const T *u, T *out, size_t n) {     \
    silu_mul<T>(g, u, out, n);                                                                 \
  }

FUSED(float, f32)
FUSED(__nv_bfloat16, bf16)
FUSED(__half, f16)
