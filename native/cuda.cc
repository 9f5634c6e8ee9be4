#include "cuda.h"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cuda_driver.h"
#include "errors.h"

namespace kyb {

namespace {

// The plain C++ baton of one call: inputs are copied in on the JS thread, the driver thread writes
// the outputs, and only the JS thread turns them into values.
struct Baton {
  std::string op;
  pid_t pid = 0;
  std::function<bool(Baton&)> work;  // runs on the call thread; false = failed (err set)
  cuda::Error err;
  int intResult = 0;
  std::vector<cuda::Gpu> gpus;
  double nativeMs = 0;  // time inside work(): the frozen check and the driver call
};

// What the JS thread settles the Promise with.
struct Outcome {
  Napi::Promise::Deferred deferred;
  Baton baton;
  bool hung = false;
  uint32_t watchdogMs = 0;
};

// Shared by the call thread (which may stay blocked in the driver for good) and the watchdog thread.
// Whichever finishes first sets `settled` and is the one that hands the Outcome to the JS thread.
struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  bool settled = false;
  Outcome* outcome = nullptr;
  Napi::ThreadSafeFunction tsfn;
};

Napi::Value Value(Napi::Env env, const Baton& b) {
  if (b.op == "listGpus") {
    Napi::Array arr = Napi::Array::New(env, b.gpus.size());
    for (size_t i = 0; i < b.gpus.size(); ++i) {
      Napi::Object g = Napi::Object::New(env);
      g.Set("index", Napi::Number::New(env, b.gpus[i].index));
      g.Set("uuid", Napi::String::New(env, b.gpus[i].uuid));
      g.Set("name", Napi::String::New(env, b.gpus[i].name));
      g.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(b.gpus[i].memoryBytes)));
      arr.Set(i, g);
    }
    return arr;
  }
  if (b.op == "driverVersion" || b.op == "getState" || b.op == "getRestoreThreadId")
    return Napi::Number::New(env, b.intResult);
  return env.Undefined();
}

// { value, nativeMs }: nativeMs is the time on the call thread (frozen check + driver call), which
// lets callers tell the driver's time from the cost of the threads and the Promise around it.
Napi::Value ToJs(Napi::Env env, const Baton& b) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("value", Value(env, b));
  o.Set("nativeMs", Napi::Number::New(env, b.nativeMs));
  return o;
}

Napi::Error MakeCudaError(Napi::Env env, const std::string& op, pid_t pid, const cuda::Error& e) {
  Napi::Error err = Napi::Error::New(env, e.message);
  err.Set("code", Napi::String::New(env, e.code));
  err.Set("errno", Napi::Number::New(env, e.err));
  err.Set("op", Napi::String::New(env, op));
  if (pid != 0) err.Set("pid", Napi::Number::New(env, pid));
  if (e.cuResult != 0) {
    err.Set("cudaError", Napi::String::New(env, e.code));
    err.Set("cudaResult", Napi::Number::New(env, e.cuResult));
  }
  return err;
}

void Settle(Napi::Env env, Outcome* o) {
  const Baton& b = o->baton;
  if (o->hung) {
    cuda::Error e;
    e.code = "KYB_ERR_CUDA_HUNG";
    e.message = b.op + (b.pid != 0 ? " pid " + std::to_string(b.pid) : "") + ": the driver call did not return within " +
                std::to_string(o->watchdogMs) + " ms; its thread is abandoned (is the process frozen or stopped?)";
    o->deferred.Reject(MakeCudaError(env, b.op, b.pid, e).Value());
  } else if (b.err.failed()) {
    o->deferred.Reject(MakeCudaError(env, b.op, b.pid, b.err).Value());
  } else {
    o->deferred.Resolve(ToJs(env, b));
  }
}

// Hands the outcome to the JS thread and drops this call's hold on the event loop.
void Deliver(Napi::ThreadSafeFunction tsfn, Outcome* outcome) {
  napi_status st = tsfn.BlockingCall([outcome](Napi::Env env, Napi::Function) {
    Settle(env, outcome);
    delete outcome;
  });
  if (st != napi_ok) delete outcome;  // the environment is gone; nobody waits for the Promise
  tsfn.Release();
}

// Starts the call thread and a watchdog thread. The call thread settles the Promise itself when the
// driver returns in time (one hop to the JS thread); otherwise the watchdog rejects it when watchdogMs
// expires. The ThreadSafeFunction keeps the event loop alive until one of them did.
Napi::Value Start(Napi::Env env, Baton baton, uint32_t watchdogMs) {
  auto* outcome = new Outcome{Napi::Promise::Deferred::New(env), std::move(baton), false, watchdogMs};
  Napi::Promise promise = outcome->deferred.Promise();
  auto shared = std::make_shared<Shared>();
  shared->outcome = outcome;
  shared->tsfn = Napi::ThreadSafeFunction::New(
      env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "kybernate.cuda", 0, 1);

  // Until `settled`, only the call thread touches outcome->baton; op and pid are never written.
  std::thread([shared] {
    Baton& b = shared->outcome->baton;
    auto t0 = std::chrono::steady_clock::now();
    b.work(b);
    b.nativeMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    bool mine;
    {
      std::lock_guard<std::mutex> lk(shared->mu);
      shared->done = true;
      mine = !shared->settled;
      shared->settled = true;
      shared->cv.notify_all();
    }
    if (mine) Deliver(shared->tsfn, shared->outcome);
    else delete shared->outcome;  // the watchdog rejected the Promise with its own copy
  }).detach();

  std::thread([shared, watchdogMs] {
    std::unique_lock<std::mutex> lk(shared->mu);
    if (shared->cv.wait_for(lk, std::chrono::milliseconds(watchdogMs), [&] { return shared->done; })) return;
    shared->settled = true;
    // The call thread may still write the baton's outputs, so the rejection gets a copy of op/pid only.
    auto* hung = new Outcome{shared->outcome->deferred, Baton{}, true, shared->outcome->watchdogMs};
    hung->baton.op = shared->outcome->baton.op;
    hung->baton.pid = shared->outcome->baton.pid;
    lk.unlock();
    Deliver(shared->tsfn, hung);
  }).detach();
  return promise;
}

uint32_t ArgWatchdog(const Napi::CallbackInfo& info, size_t i) {
  int ms = ArgInt(info, i, "watchdogMs");
  if (ms <= 0) throw Napi::RangeError::New(info.Env(), "watchdogMs must be > 0");
  return static_cast<uint32_t>(ms);
}

pid_t ArgPid(const Napi::CallbackInfo& info, size_t i) {
  int pid = ArgInt(info, i, "pid");
  if (pid <= 0) throw Napi::RangeError::New(info.Env(), "pid must be > 0");
  return pid;
}

Baton Make(const char* op, pid_t pid, std::function<bool(Baton&)> work) {
  Baton b;
  b.op = op;
  b.pid = pid;
  b.work = std::move(work);
  return b;
}

}  // namespace

Napi::Value CudaDriverVersion(const Napi::CallbackInfo& info) {
  uint32_t wd = ArgWatchdog(info, 0);
  return Start(info.Env(), Make("driverVersion", 0, [](Baton& b) { return cuda::DriverVersion(&b.intResult, &b.err); }), wd);
}

Napi::Value CudaListGpus(const Napi::CallbackInfo& info) {
  uint32_t wd = ArgWatchdog(info, 0);
  return Start(info.Env(), Make("listGpus", 0, [](Baton& b) { return cuda::ListGpus(&b.gpus, &b.err); }), wd);
}

Napi::Value CudaGetState(const Napi::CallbackInfo& info) {
  pid_t pid = ArgPid(info, 0);
  uint32_t wd = ArgWatchdog(info, 1);
  return Start(info.Env(), Make("getState", pid, [](Baton& b) { return cuda::GetState(b.pid, &b.intResult, &b.err); }), wd);
}

Napi::Value CudaGetRestoreThreadId(const Napi::CallbackInfo& info) {
  pid_t pid = ArgPid(info, 0);
  uint32_t wd = ArgWatchdog(info, 1);
  return Start(info.Env(),
               Make("getRestoreThreadId", pid, [](Baton& b) { return cuda::GetRestoreThreadId(b.pid, &b.intResult, &b.err); }),
               wd);
}

Napi::Value CudaLock(const Napi::CallbackInfo& info) {
  pid_t pid = ArgPid(info, 0);
  int timeoutMs = ArgInt(info, 1, "timeoutMs");
  if (timeoutMs < 0) throw Napi::RangeError::New(info.Env(), "timeoutMs must be >= 0");
  uint32_t wd = ArgWatchdog(info, 2);
  uint32_t t = static_cast<uint32_t>(timeoutMs);
  return Start(info.Env(), Make("lock", pid, [t](Baton& b) { return cuda::Lock(b.pid, t, &b.err); }), wd);
}

Napi::Value CudaCheckpoint(const Napi::CallbackInfo& info) {
  pid_t pid = ArgPid(info, 0);
  uint32_t wd = ArgWatchdog(info, 1);
  return Start(info.Env(), Make("checkpoint", pid, [](Baton& b) { return cuda::Checkpoint(b.pid, &b.err); }), wd);
}

Napi::Value CudaRestore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = ArgPid(info, 0);
  if (info.Length() < 2 || !info[1].IsArray()) throw Napi::TypeError::New(env, "gpuPairs must be an array");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<cuda::GpuPair> pairs;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value v = arr.Get(i);
    Napi::Array pair = v.IsArray() ? v.As<Napi::Array>() : Napi::Array();
    cuda::GpuPair p;
    bool ok = v.IsArray() && pair.Length() == 2 && pair.Get(0u).IsString() && pair.Get(1u).IsString() &&
              cuda::ParseUuid(pair.Get(0u).As<Napi::String>().Utf8Value(), &p.oldUuid) &&
              cuda::ParseUuid(pair.Get(1u).As<Napi::String>().Utf8Value(), &p.newUuid);
    if (!ok)
      throw Napi::TypeError::New(env, "gpuPairs[" + std::to_string(i) +
                                          "] must be [oldUuid, newUuid] GPU UUID strings (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)");
    pairs.push_back(p);
  }
  uint32_t wd = ArgWatchdog(info, 2);
  return Start(env, Make("restore", pid, [pairs](Baton& b) { return cuda::Restore(b.pid, pairs, &b.err); }), wd);
}

Napi::Value CudaUnlock(const Napi::CallbackInfo& info) {
  pid_t pid = ArgPid(info, 0);
  uint32_t wd = ArgWatchdog(info, 1);
  return Start(info.Env(), Make("unlock", pid, [](Baton& b) { return cuda::Unlock(b.pid, &b.err); }), wd);
}

Napi::Value CudaCheckRunnable(const Napi::CallbackInfo& info) {
  pid_t pid = ArgPid(info, 0);
  cuda::Error e;
  if (!cuda::CheckRunnable(pid, &e)) throw MakeCudaError(info.Env(), "checkRunnable", pid, e);
  return info.Env().Undefined();
}

}  // namespace kyb
