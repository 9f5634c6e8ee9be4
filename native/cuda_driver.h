// The CUDA driver's process-checkpoint API, reached through dlopen("libcuda.so.1") so that the addon
// builds and loads on machines without CUDA. Plain C++ (no N-API): every function here may run on any
// thread. The argument structs are our own declarations of the r580 (CUDA 13.0) ABI; zeroing them and
// setting only gpuPairs/gpuPairsCount/timeoutMs keeps them valid for the 13.3+ layouts too, because
// those fields never moved (research/gpu-checkpoint.md §1.2).
#ifndef KYBERNATE_CUDA_DRIVER_H_
#define KYBERNATE_CUDA_DRIVER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kyb {
namespace cuda {

struct Uuid {
  unsigned char bytes[16];
};

struct GpuPair {
  Uuid oldUuid;  // the GPU that was checkpointed
  Uuid newUuid;  // the GPU to restore onto
};

struct LockArgs {
  uint32_t timeoutMs;  // 0 = wait forever
  uint32_t reserved0;
  uint64_t reserved1[7];
};

struct CheckpointArgs {
  uint64_t reserved[8];
};

struct RestoreArgs {
  GpuPair* gpuPairs;
  uint32_t gpuPairsCount;
  char reserved[52 - sizeof(GpuPair*)];
  uint64_t reserved1;
};

struct UnlockArgs {
  uint64_t reserved[8];
};

static_assert(sizeof(Uuid) == 16, "CUuuid is 16 bytes");
static_assert(sizeof(GpuPair) == 32, "CUcheckpointGpuPair is 32 bytes");
static_assert(offsetof(GpuPair, newUuid) == 16, "CUcheckpointGpuPair.newUuid at +16");
static_assert(sizeof(LockArgs) == 64, "CUcheckpointLockArgs is 64 bytes");
static_assert(offsetof(LockArgs, timeoutMs) == 0, "CUcheckpointLockArgs.timeoutMs at +0");
static_assert(offsetof(LockArgs, reserved1) == 8, "CUcheckpointLockArgs.reserved1 at +8");
static_assert(sizeof(CheckpointArgs) == 64, "CUcheckpointCheckpointArgs is 64 bytes");
static_assert(sizeof(RestoreArgs) == 64, "CUcheckpointRestoreArgs is 64 bytes");
static_assert(offsetof(RestoreArgs, gpuPairs) == 0, "CUcheckpointRestoreArgs.gpuPairs at +0");
static_assert(offsetof(RestoreArgs, gpuPairsCount) == 8, "CUcheckpointRestoreArgs.gpuPairsCount at +8");
static_assert(offsetof(RestoreArgs, reserved) == 12, "CUcheckpointRestoreArgs.reserved at +12");
static_assert(offsetof(RestoreArgs, reserved1) == 56, "CUcheckpointRestoreArgs.reserved1 at +56");
static_assert(sizeof(UnlockArgs) == 64, "CUcheckpointUnlockArgs is 64 bytes");

// CUprocessState.
enum ProcessState : int { kRunning = 0, kLocked = 1, kCheckpointed = 2, kFailed = 3 };

// The first driver API version with cuCheckpointProcess* (driver r570 = CUDA 12.8).
constexpr int kMinCheckpointVersion = 12080;

// A failed step. code is 'KYB_ERR_CUDA_*', an errno name ('ESRCH'), or the driver's error name
// (CUDA_ERROR_ILLEGAL_STATE, ...) with cuResult set.
struct Error {
  std::string code;
  std::string message;
  int cuResult = 0;  // CUresult, 0 when the failure did not come from the driver
  int err = 0;       // errno, 0 when none
  bool failed() const { return !code.empty(); }
};

struct Gpu {
  int index = 0;
  std::string uuid;  // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints it
  std::string name;
  uint64_t memoryBytes = 0;
};

// Each returns false and fills *e on failure. Loading happens once per process on first use
// (libcuda is process-wide state, so its handle and function table are the one process-wide global).
bool DriverVersion(int* version, Error* e);
bool ListGpus(std::vector<Gpu>* out, Error* e);
bool GetState(pid_t pid, int* state, Error* e);
bool GetRestoreThreadId(pid_t pid, int* tid, Error* e);
bool Lock(pid_t pid, uint32_t timeoutMs, Error* e);
bool Checkpoint(pid_t pid, Error* e);
bool Restore(pid_t pid, const std::vector<GpuPair>& pairs, Error* e);
bool Unlock(pid_t pid, Error* e);

// Refuses a target the driver would hang on: a driver call does its work on a thread inside the
// target, so a process that cannot run (cgroup v1/v2 freezer, SIGSTOP, ptrace stop) blocks the caller
// for good (ENVIRONMENT.md). Also fails with ESRCH for a pid that does not exist.
bool CheckRunnable(pid_t pid, Error* e);

// "GPU-<8>-<4>-<4>-<4>-<12>" (the "GPU-" prefix optional) → bytes; false if malformed.
bool ParseUuid(const std::string& s, Uuid* out);
std::string FormatUuid(const Uuid& u);

}  // namespace cuda
}  // namespace kyb

#endif  // KYBERNATE_CUDA_DRIVER_H_
