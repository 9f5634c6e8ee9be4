// containerd-shim-kybernate-v2, the native front. containerd execs the shim binary for every `start`
// and `delete`; booting Node for each costs tens of milliseconds on containerd's critical path. The
// front answers the common cases natively, then tries a warm spare shim, and otherwise execs Node with
// the JS shim exactly as the old launcher did:
//   -v / -info / the daemon / other actions   → Node
//   start   → fast (a live group daemon) → spare → Node
//   delete  → fast (already deleted)     → spare → Node
// KYBERNATE_SHIM_FAST=0 and KYBERNATE_SHIM_SPARE=0 switch off the first two steps.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "front.h"

using namespace kybfront;

namespace {

// With fd 0, 1 or 2 closed, the next open() would land there and a stray write (or stdin read) would
// hit a front's own file. /dev/null in their place reads as empty stdin, as a closed fd does for the
// JS shim.
void KeepStdFdsOpen() {
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    int n = open("/dev/null", O_RDWR);
    if (n != fd) Fail("cannot open /dev/null for a closed standard fd");
  }
}

std::string TraceAction(const Flags& flags) {
  if (flags.version) return "version";
  if (flags.info) return "info";
  return flags.action.empty() ? "daemon" : flags.action;
}

}  // namespace

int main(int argc, char** argv) {
  TraceStart();
  KeepStdFdsOpen();
  const Flags flags = ParseFlags(argc, argv);
  const std::string action = TraceAction(flags);
  Conf conf;
  std::string err;
  if (!LoadConf(&conf, &err)) {
    Trace(action + ":error", flags.id);
    Fail(err);
  }
  // The JS shim checks -v/-info before the action: so does the front.
  const bool start = !flags.version && !flags.info && flags.action == "start";
  const bool del = !flags.version && !flags.info && flags.action == "delete";
  if (!start && !del) {
    Trace(action + ":node", flags.id);
    ExecNode(conf, argc, argv, nullptr);
  }

  const bool fast = !EnvIsZero("KYBERNATE_SHIM_FAST");
  const bool spare = !EnvIsZero("KYBERNATE_SHIM_SPARE") && !conf.build.empty();
  // start's stdin (runtime options, or 2.3's BootstrapParams) is read once here; Node gets the same
  // bytes back through a memfd. Without a fast path or spare to use them, fd 0 is left untouched.
  std::string stdin_bytes;
  const std::string* replay = nullptr;
  if (start && (fast || spare)) {
    // An unreadable fd 0 counts as empty, as in the JS shim; Node then gets an empty stdin too.
    if (!ReadAll(0, &stdin_bytes)) {
      stdin_bytes.clear();
      replay = &stdin_bytes;
    } else if (!stdin_bytes.empty()) {
      replay = &stdin_bytes;
    }
  }

  if (fast && (start ? StartFast(flags, stdin_bytes) : DeleteFast(flags))) {
    Trace(action + ":fast", flags.id);
    _exit(0);
  }

  SpareDone done;
  if (spare && AskSpare(conf, argc, argv, stdin_bytes, &done)) {
    // Final: the spare did the work. Never fall back after this, even if writing the answer fails.
    bool ok = WriteAll(1, done.out.data(), done.out.size());
    ok = WriteAll(2, done.err.data(), done.err.size()) && ok;
    Trace(action + ":spare", flags.id);
    _exit(!ok && done.exit_code == 0 ? 1 : static_cast<int>(done.exit_code & 0xff));
  }

  Trace(action + ":node", flags.id);
  ExecNode(conf, argc, argv, replay);
}
