// Native errors reach JS as plain Errors tagged with { code, errno, op, path?, pid? }; the TS wrapper
// (src/native/errors.ts) turns them into NativeError with the caller's stack.
#ifndef KYBERNATE_ERRORS_H_
#define KYBERNATE_ERRORS_H_

#include <napi.h>

#include <string>

namespace kyb {

// A failure recorded off the main thread (AsyncWorker batons) and turned into a JS error later.
struct Failure {
  std::string op;       // 'spawn', 'mount', 'receiveFd', ...
  int err = 0;          // errno; 0 means a non-errno failure (code KYB_ERR_NATIVE)
  std::string message;  // what failed, without the strerror text
  std::string path;     // path involved, if any
  int pid = 0;          // pid involved, if any
  bool failed() const { return !op.empty(); }
};

// "ENOENT" etc., or nullptr for an unknown errno.
const char* ErrnoName(int err);

// Builds the tagged JS error. message defaults to "<op> <path>"; strerror(err) is appended.
Napi::Error MakeError(Napi::Env env, const Failure& f);

// Shorthand for the common case on the main thread: throw after a failed syscall.
[[noreturn]] void ThrowErrno(Napi::Env env, const char* op, int err, const std::string& path = "",
                             int pid = 0);

// Argument checks shared by every exported function; they throw TypeError.
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name);
int ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name);
Napi::Function ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* name);

}  // namespace kyb

#endif  // KYBERNATE_ERRORS_H_
