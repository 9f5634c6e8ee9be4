// fork + execve on the calling (JS) thread. The child's parent-death signal follows the thread
// that forked it, and only the JS thread lives as long as the shim, so spawn stays synchronous.
#ifndef KYBERNATE_SPAWN_H_
#define KYBERNATE_SPAWN_H_

#include <napi.h>

namespace kyb {

// spawn({ file, args, env, cwd?, stdio: [in, out, err], extraFds?, deathSignal?, setsid? }) → pid
Napi::Value Spawn(const Napi::CallbackInfo& info);

}  // namespace kyb

#endif  // KYBERNATE_SPAWN_H_
