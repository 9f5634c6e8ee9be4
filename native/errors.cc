#include "errors.h"

#include <string.h>

namespace kyb {

const char* ErrnoName(int err) {
  // glibc >= 2.32; returns nullptr for numbers it does not know.
  return err > 0 ? strerrorname_np(err) : nullptr;
}

Napi::Error MakeError(Napi::Env env, const Failure& f) {
  std::string msg = f.message;
  if (msg.empty()) msg = f.path.empty() ? f.op : f.op + " " + f.path;
  if (f.err > 0) msg += std::string(": ") + strerror(f.err);
  Napi::Error e = Napi::Error::New(env, msg);
  const char* name = ErrnoName(f.err);
  e.Set("code", Napi::String::New(env, name != nullptr ? name : "KYB_ERR_NATIVE"));
  e.Set("errno", Napi::Number::New(env, f.err));
  e.Set("op", Napi::String::New(env, f.op));
  if (!f.path.empty()) e.Set("path", Napi::String::New(env, f.path));
  if (f.pid != 0) e.Set("pid", Napi::Number::New(env, f.pid));
  return e;
}

void ThrowErrno(Napi::Env env, const char* op, int err, const std::string& path, int pid) {
  Failure f;
  f.op = op;
  f.err = err;
  f.path = path;
  f.pid = pid;
  throw MakeError(env, f);
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos)
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must not contain NUL");
  return s;
}

int ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().Int32Value();
}

Napi::Function ArgFunction(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsFunction())
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a function");
  return info[i].As<Napi::Function>();
}

}  // namespace kyb
