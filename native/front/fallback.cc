// The slow path, identical to the old bin/ launcher: execv(node, [node, arg..., script, argv[1]...])
// with the environment unchanged. Node's process.argv.slice(2) is then exactly the front's flags.
// Every fd the front opened is O_CLOEXEC, so Node inherits only containerd's fds (plus a new fd 0).
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vector>

#include "front.h"

namespace kybfront {

namespace {

// `start` already read stdin to EOF; the JS shim reads it again with readFileSync(0). A memfd with
// the same bytes, at offset 0, replaces fd 0 so that Node sees exactly what containerd wrote.
void ReplayStdin(const std::string& bytes) {
  int fd = memfd_create("kybernate-shim-stdin", MFD_CLOEXEC);
  if (fd < 0) Fail(std::string("memfd_create for stdin: ") + strerror(errno));
  if (!WriteAll(fd, bytes.data(), bytes.size())) Fail(std::string("writing stdin to a memfd: ") + strerror(errno));
  if (lseek(fd, 0, SEEK_SET) != 0) Fail(std::string("lseek on the stdin memfd: ") + strerror(errno));
  if (fd == 0) {  // main() keeps fds 0-2 open, so this cannot happen; if it did, keep it across execv
    if (fcntl(0, F_SETFD, 0) != 0) Fail(std::string("fcntl on the stdin memfd: ") + strerror(errno));
    return;
  }
  // dup2 clears FD_CLOEXEC on the copy: fd 0 survives execv, the original is closed by it.
  if (dup2(fd, 0) < 0) Fail(std::string("dup2 of the stdin memfd: ") + strerror(errno));
  close(fd);
}

}  // namespace

void ExecNode(const Conf& conf, int argc, char** argv, const std::string* stdin_bytes) {
  if (stdin_bytes != nullptr) ReplayStdin(*stdin_bytes);
  std::vector<char*> args;
  args.reserve(conf.args.size() + static_cast<size_t>(argc) + 2);
  args.push_back(const_cast<char*>(conf.node.c_str()));
  for (const std::string& a : conf.args) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(const_cast<char*>(conf.script.c_str()));
  for (int i = 1; i < argc; i++) args.push_back(argv[i]);
  args.push_back(nullptr);
  execv(conf.node.c_str(), args.data());
  Fail("exec " + conf.node + ": " + strerror(errno));
}

}  // namespace kybfront
