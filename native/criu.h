// libcriu, loaded with dlopen on first use (crun style: required symbols fail the load by name,
// optional ones gate a feature). Every call is a Promise backed by an AsyncWorker over a plain baton
// and uses its own criu_local_* options, so concurrent calls do not share libcriu state.
//
// How a call reaches CRIU: libcriu's default mode forks `criu swrk` itself, with a socketpair that is
// not close-on-exec. In a multi-threaded process two concurrent calls can then leak each other's
// socket into their criu children, and each criu waits for an EOF the other one holds. So the
// worker spawns `criu swrk <fd>` itself (CLOEXEC socketpair, only the child's end inherited), hands
// the socket to libcriu with criu_local_set_service_fd, and waits for that exact pid afterwards.
//
// Reaping: that criu child is a child of this process. A process-wide reaper that calls
// waitid(P_ALL) (native/reaper.cc, the shim's) would steal its exit status and this worker's
// waitpid() would then get ECHILD (harmless here: the result comes over the socket, not the exit
// status). Issue 4 must make the shim's reaper hand such pids back or ignore them.
//
// Restore: CRIU's RPC restore is always detached (CRIU has no rst_sibling in our own-swrk setup, and
// libcriu's restore_child would fork criu itself again). The restored root is a child of criu, which
// exits after the restore, so the tree is re-parented to the nearest child subreaper above us (the
// shim, whose reaper then reaps it like any container process) or to init (the CLI). Nobody in this
// process waits for it.
//
// Deadline: timeoutMs kills criu; its tracees are detached and keep running. noBreakpoints sets
// CRIU_FAULT=130 for criu, which then stops its parasite by syscall tracing instead of a hardware
// breakpoint: on machines whose debug registers do not work (a VM here) every dump hangs otherwise.
// libcriu prints its own perror() lines to stderr when criu dies mid-call; they cannot be turned off.
#ifndef KYBERNATE_CRIU_H_
#define KYBERNATE_CRIU_H_

#include <napi.h>

namespace kyb {

// criuVersion({binary?, libcriu?}) → Promise<number> (major*10000 + minor*100 + sublevel).
Napi::Value CriuVersion(const Napi::CallbackInfo& info);
// criuCheck({workDir, binary?, libcriu?}) → Promise<void>; rejects with CRIU's error lines. CRIU 4.1.1's
// RPC check crashes (its check child segfaults: libcriu sends no options), so callers fall back to the
// `criu check` command.
Napi::Value CriuCheck(const Napi::CallbackInfo& info);
// criuFeatures({...}) → Promise<{memTrack, lazyPages, pidfdStore}>.
Napi::Value CriuFeatures(const Napi::CallbackInfo& info);
// criuDump({pid, imagesDir, workDir?, logFile?, logLevel?, leaveRunning?, shellJob?, tcpEstablished?,
//           extUnixSk?, fileLocks?, manageCgroupsMode?, extMounts?, external?, timeoutMs?}) → Promise<void>.
Napi::Value CriuDump(const Napi::CallbackInfo& info);
// criuRestore({imagesDir, workDir?, ...same flags}) → Promise<number> (the restored root pid).
Napi::Value CriuRestore(const Napi::CallbackInfo& info);

}  // namespace kyb

#endif  // KYBERNATE_CRIU_H_
