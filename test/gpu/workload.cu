// GPU suite workload: holds N GiB of device memory filled with a pattern derived from each word's
// index and a seed, and checks it on request. Protocol on stdin/stdout, one line each:
//   start-up      → "ready <pid> <bytes>"
//   "verify"      → "verify <bad words> <checksum>"   (bad words = 0 means the memory is intact)
//   "quit" or EOF → exits 0
// With --signal (the container suite: a container's stdin is no channel the suite can write to) it
// takes no input: each SIGUSR1 verifies once and writes "<n> <bad words> <checksum>" (n counts the
// verifications, so it continues across a checkpoint) to /tmp/kyb-verify by rename, and to stdout;
// SIGTERM or SIGINT exits 0. The suite reads the file through /proc/<pid>/root.
// Between requests the process makes no CUDA calls, so a lock never waits for our own work.
#include <cuda_runtime.h>
#include <errno.h>
#include <signal.h>
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

static void check_memory(const uint32_t* p, size_t n, uint32_t seed, unsigned long long* acc, unsigned long long h[2]) {
  CHECK(cudaMemset(acc, 0, 2 * sizeof(unsigned long long)));
  verify<<<1024, 256>>>(p, n, seed, acc, acc + 1);
  CHECK(cudaMemcpy(h, acc, 2 * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
}

// The signal mode's loop: the signals were blocked before CUDA started its threads, so only
// sigwaitinfo here takes them (a restored process may see EINTR once).
static int signal_loop(const uint32_t* p, size_t n, uint32_t seed, unsigned long long* acc, const sigset_t* set) {
  unsigned long long count = 0;
  for (;;) {
    int sig = sigwaitinfo(set, NULL);
    if (sig < 0) {
      if (errno == EINTR) continue;
      perror("workload: sigwaitinfo");
      return 1;
    }
    if (sig != SIGUSR1) return 0;
    unsigned long long h[2];
    check_memory(p, n, seed, acc, h);
    count++;
    FILE* f = fopen("/tmp/kyb-verify.tmp", "w");
    if (f == NULL) {
      perror("workload: /tmp/kyb-verify.tmp");
      return 1;
    }
    fprintf(f, "%llu %llu %llu\n", count, h[0], h[1]);
    fclose(f);
    if (rename("/tmp/kyb-verify.tmp", "/tmp/kyb-verify") != 0) {
      perror("workload: rename");
      return 1;
    }
    printf("verify %llu %llu %llu\n", count, h[0], h[1]);
  }
}

int main(int argc, char** argv) {
  int signal_mode = argc > 1 && strcmp(argv[argc - 1], "--signal") == 0;
  if (signal_mode) argc--;
  if (argc < 2) {
    fprintf(stderr, "usage: workload <GiB> [seed] [--signal]\n");
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  if (signal_mode) sigprocmask(SIG_BLOCK, &set, NULL);
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
  if (signal_mode) {
    FILE* f = fopen("/tmp/kyb-ready", "w");
    if (f != NULL) {
      fprintf(f, "%zu\n", n * sizeof(uint32_t));
      fclose(f);
    }
    int rc = signal_loop(p, n, seed, acc, &set);
    CHECK(cudaFree(p));
    return rc;
  }
  char line[64];
  while (fgets(line, sizeof line, stdin) != NULL) {
    if (strncmp(line, "verify", 6) == 0) {
      unsigned long long h[2];
      check_memory(p, n, seed, acc, h);
      printf("verify %llu %llu\n", h[0], h[1]);
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  CHECK(cudaFree(p));
  return 0;
}
