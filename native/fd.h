// File-descriptor primitives: pipes, the runc console socket (receive a pty master over
// SCM_RIGHTS), terminal size, and peer credentials of a unix socket.
#ifndef KYBERNATE_FD_H_
#define KYBERNATE_FD_H_

#include <napi.h>

namespace kyb {

Napi::Value Pipe(const Napi::CallbackInfo& info);            // () → [read, write], both CLOEXEC
Napi::Value Close(const Napi::CallbackInfo& info);           // (fd)
Napi::Value SetNonBlocking(const Napi::CallbackInfo& info);  // (fd, on)
Napi::Value ListenUnix(const Napi::CallbackInfo& info);      // (path) → listening fd, socket mode 0600
Napi::Value ReceiveFd(const Napi::CallbackInfo& info);       // (listenFd, timeoutMs) → Promise<fd>
Napi::Value SetWinsize(const Napi::CallbackInfo& info);      // (fd, cols, rows)
Napi::Value PeerCredentials(const Napi::CallbackInfo& info); // (fd) → { pid, uid, gid }

}  // namespace kyb

#endif  // KYBERNATE_FD_H_
