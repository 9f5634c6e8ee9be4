#include "mount.h"

#include <errno.h>
#include <sys/mount.h>

#include <string>

#include "errors.h"

namespace kyb {

namespace {
// Empty strings mean NULL: bind mounts and remounts take no fstype, most mounts no data.
const char* OrNull(const std::string& s) { return s.empty() ? nullptr : s.c_str(); }

// Flags go to the kernel as unsigned long; JS numbers up to 2^53 hold every MS_* bit.
unsigned long ArgFlags(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "flags must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
    throw Napi::RangeError::New(info.Env(), "flags must be a non-negative integer");
  return static_cast<unsigned long>(d);
}
}  // namespace

Napi::Value Mount(const Napi::CallbackInfo& info) {
  std::string source = ArgString(info, 0, "source");
  std::string target = ArgString(info, 1, "target");
  std::string fstype = ArgString(info, 2, "fstype");
  unsigned long flags = ArgFlags(info, 3);
  std::string data = ArgString(info, 4, "data");
  if (mount(OrNull(source), target.c_str(), OrNull(fstype), flags, OrNull(data)) < 0) {
    Failure f{"mount", errno, "mount " + (source.empty() ? std::string("none") : source) + " on " + target, target};
    throw MakeError(info.Env(), f);
  }
  return info.Env().Undefined();
}

Napi::Value Umount(const Napi::CallbackInfo& info) {
  std::string target = ArgString(info, 0, "target");
  int flags = static_cast<int>(ArgFlags(info, 1));
  if (umount2(target.c_str(), flags) < 0) ThrowErrno(info.Env(), "umount", errno, target);
  return info.Env().Undefined();
}

void ExportMountConstants(Napi::Env env, Napi::Object exports) {
  auto set = [&](const char* name, unsigned long v) {
    exports.Set(name, Napi::Number::New(env, static_cast<double>(v)));
  };
  set("MS_RDONLY", MS_RDONLY);
  set("MS_NOSUID", MS_NOSUID);
  set("MS_NODEV", MS_NODEV);
  set("MS_NOEXEC", MS_NOEXEC);
  set("MS_SYNCHRONOUS", MS_SYNCHRONOUS);
  set("MS_REMOUNT", MS_REMOUNT);
  set("MS_MANDLOCK", MS_MANDLOCK);
  set("MS_DIRSYNC", MS_DIRSYNC);
  set("MS_NOATIME", MS_NOATIME);
  set("MS_NODIRATIME", MS_NODIRATIME);
  set("MS_BIND", MS_BIND);
  set("MS_MOVE", MS_MOVE);
  set("MS_REC", MS_REC);
  set("MS_SILENT", MS_SILENT);
  set("MS_PRIVATE", MS_PRIVATE);
  set("MS_SLAVE", MS_SLAVE);
  set("MS_SHARED", MS_SHARED);
  set("MS_RELATIME", MS_RELATIME);
  set("MS_STRICTATIME", MS_STRICTATIME);
  set("MS_LAZYTIME", MS_LAZYTIME);
  set("MS_UNBINDABLE", MS_UNBINDABLE);
  set("MNT_DETACH", MNT_DETACH);
  set("MNT_FORCE", MNT_FORCE);
  set("UMOUNT_NOFOLLOW", UMOUNT_NOFOLLOW);
}

}  // namespace kyb
