// GPU suite workload: holds N GiB of device memory filled with a pattern derived from each word's
// index and a seed, and checks it on request. Protocol on stdin/stdout, one line each:
//   start-up      → "ready <pid> <bytes>"
//   "verify"      → "verify <bad words> <checksum>"   (bad words = 0 means the memory is intact)
//   "quit" or EOF → exits 0
// Between requests the process makes no CUDA calls, so a lock never waits for our own work.
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(x)                                                                   \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      fprintf(stderr, "workload: %s: %s\n", #x, cudaGetErrorString(e_));          \
      exit(1);                                                                     \
    }                                                                              \
  } while (0)

__device__ __forceinline__ uint32_t pattern(size_t i, uint32_t seed) {
  uint32_t x = (uint32_t)i ^ (uint32_t)(i >> 32) * 0x9e3779b9u ^ seed;
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  return x;
}

__global__ void fill(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = pattern(i, seed);
}

__global__ void verify(const uint32_t* p, size_t n, uint32_t seed, unsigned long long* bad, unsigned long long* sum) {
  unsigned long long b = 0, s = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t v = p[i];
    b += v != pattern(i, seed);
    s += v;
  }
  atomicAdd(bad, b);
  atomicAdd(sum, s);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: workload <GiB> [seed]\n");
    return 2;
  }
  size_t bytes = (size_t)(atof(argv[1]) * (double)(1ull << 30));
  uint32_t seed = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 0x5eedu;
  size_t n = bytes / sizeof(uint32_t);
  uint32_t* p;
  unsigned long long* acc;
  CHECK(cudaMalloc(&p, n * sizeof(uint32_t)));
  CHECK(cudaMalloc(&acc, 2 * sizeof(unsigned long long)));
  fill<<<1024, 256>>>(p, n, seed);
  CHECK(cudaDeviceSynchronize());
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready %d %zu\n", (int)getpid(), n * sizeof(uint32_t));
  char line[64];
  while (fgets(line, sizeof line, stdin) != NULL) {
    if (strncmp(line, "verify", 6) == 0) {
      CHECK(cudaMemset(acc, 0, 2 * sizeof(unsigned long long)));
      verify<<<1024, 256>>>(p, n, seed, acc, acc + 1);
      unsigned long long h[2];
      CHECK(cudaMemcpy(h, acc, sizeof h, cudaMemcpyDeviceToHost));
      printf("verify %llu %llu\n", h[0], h[1]);
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  CHECK(cudaFree(p));
  return 0;
}
