// mount(2) / umount2(2) and their flag constants.
#ifndef KYBERNATE_MOUNT_H_
#define KYBERNATE_MOUNT_H_

#include <napi.h>

namespace kyb {

Napi::Value Mount(const Napi::CallbackInfo& info);   // (source, target, fstype, flags, data)
Napi::Value Umount(const Napi::CallbackInfo& info);  // (target, flags)
// Adds MS_*, MNT_DETACH, MNT_FORCE and UMOUNT_NOFOLLOW to exports.
void ExportMountConstants(Napi::Env env, Napi::Object exports);

}  // namespace kyb

#endif  // KYBERNATE_MOUNT_H_
