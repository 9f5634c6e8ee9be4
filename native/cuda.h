// JS exports of the CUDA checkpoint API (native/cuda_driver.h does the driver work). Every call returns a
// Promise and runs on its own pair of detached threads, never on the libuv pool: a driver call on a
// process that cannot run never returns, and must not take a pool thread with it. The caller passes a
// watchdog (ms); when it expires the Promise rejects with KYB_ERR_CUDA_HUNG and the stuck thread is
// abandoned (it still holds nothing the JS side needs). Promises resolve to { value, nativeMs }, where
// nativeMs is the time spent on the call thread (frozen check + driver call).
#ifndef KYBERNATE_CUDA_H_
#define KYBERNATE_CUDA_H_

#include <napi.h>

namespace kyb {

Napi::Value CudaDriverVersion(const Napi::CallbackInfo& info);  // (watchdogMs) → number
Napi::Value CudaListGpus(const Napi::CallbackInfo& info);       // (watchdogMs) → Gpu[]
Napi::Value CudaGetState(const Napi::CallbackInfo& info);       // (pid, watchdogMs) → number
Napi::Value CudaGetRestoreThreadId(const Napi::CallbackInfo& info);  // (pid, watchdogMs) → number
Napi::Value CudaLock(const Napi::CallbackInfo& info);           // (pid, timeoutMs, watchdogMs)
Napi::Value CudaCheckpoint(const Napi::CallbackInfo& info);     // (pid, watchdogMs)
Napi::Value CudaRestore(const Napi::CallbackInfo& info);        // (pid, [[old, new], ...], watchdogMs)
Napi::Value CudaUnlock(const Napi::CallbackInfo& info);         // (pid, watchdogMs)
Napi::Value CudaCheckRunnable(const Napi::CallbackInfo& info);  // (pid) → undefined; throws if frozen

}  // namespace kyb

#endif  // KYBERNATE_CUDA_H_
