// Registration only: every export lives in the file of its concern.
#include <napi.h>

#include "addon.h"
#include "criu.h"
#include "cuda.h"
#include "fd.h"
#include "mount.h"
#include "oom.h"
#include "reaper.h"
#include "spawn.h"

namespace kyb {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* addon = new Addon();
  // Instance data is deleted after cleanup hooks run, so the threads are joined before the
  // struct they use goes away.
  env.SetInstanceData<Addon>(addon);
  env.AddCleanupHook([addon] { addon->Shutdown(); });

  auto fn = [&](const char* name, Napi::Function::Callback cb) {
    exports.Set(name, Napi::Function::New(env, cb, name));
  };
  fn("setSubreaper", SetSubreaper);
  fn("startReaper", StartReaper);
  fn("stopReaper", StopReaper);
  fn("reaperRef", ReaperRef);
  fn("spawn", Spawn);
  fn("pipe", Pipe);
  fn("close", Close);
  fn("setNonBlocking", SetNonBlocking);
  fn("listenUnix", ListenUnix);
  fn("receiveFd", ReceiveFd);
  fn("setWinsize", SetWinsize);
  fn("peerCredentials", PeerCredentials);
  fn("mount", Mount);
  fn("umount", Umount);
  fn("watchOomV1", WatchOomV1);
  fn("unwatchOomV1", UnwatchOomV1);
  fn("oomWatchActive", OomWatchActive);
  fn("cudaDriverVersion", CudaDriverVersion);
  fn("cudaListGpus", CudaListGpus);
  fn("cudaGetState", CudaGetState);
  fn("cudaGetRestoreThreadId", CudaGetRestoreThreadId);
  fn("cudaLock", CudaLock);
  fn("cudaCheckpoint", CudaCheckpoint);
  fn("cudaRestore", CudaRestore);
  fn("cudaUnlock", CudaUnlock);
  fn("cudaCheckRunnable", CudaCheckRunnable);
  fn("criuVersion", CriuVersion);
  fn("criuCheck", CriuCheck);
  fn("criuFeatures", CriuFeatures);
  fn("criuDump", CriuDump);
  fn("criuRestore", CriuRestore);
  ExportMountConstants(env, exports);
  return exports;
}

}  // namespace kyb

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return kyb::Init(env, exports); }

NODE_API_MODULE(kybernate, InitAddon)
