#include "cuda_driver.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fstream>
#include <mutex>
#include <sstream>

namespace kyb {
namespace cuda {

namespace {

using CUresult = int;
using CUdevice = int;

// How far loading got. Each operation needs a level; a machine may have a driver that can list GPUs
// but cannot checkpoint processes.
enum Level { kNone, kLibrary, kDevices, kCheckpoint };

struct Table {
  void* handle = nullptr;
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDriverGetVersion)(int*) = nullptr;
  CUresult (*cuGetErrorName)(CUresult, const char**) = nullptr;
  CUresult (*cuGetErrorString)(CUresult, const char**) = nullptr;
  CUresult (*cuDeviceGetCount)(int*) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*cuDeviceGetName)(char*, int, CUdevice) = nullptr;
  CUresult (*cuDeviceGetUuid)(Uuid*, CUdevice) = nullptr;
  CUresult (*cuDeviceTotalMem)(size_t*, CUdevice) = nullptr;
  CUresult (*cuCheckpointProcessGetState)(int, int*) = nullptr;
  CUresult (*cuCheckpointProcessGetRestoreThreadId)(int, int*) = nullptr;
  CUresult (*cuCheckpointProcessLock)(int, LockArgs*) = nullptr;
  CUresult (*cuCheckpointProcessCheckpoint)(int, CheckpointArgs*) = nullptr;
  CUresult (*cuCheckpointProcessRestore)(int, RestoreArgs*) = nullptr;
  CUresult (*cuCheckpointProcessUnlock)(int, UnlockArgs*) = nullptr;

  int version = 0;
  Level level = kNone;
  Error libraryError;     // why level stopped below kDevices / kCheckpoint
  Error devicesError;
  Error checkpointError;
  std::once_flag loaded;
  std::mutex initMu;      // cuInit runs once, on first need
  bool initDone = false;
  CUresult initResult = 0;
};

// libcuda holds process-wide state that does not survive unloading once cuInit ran, so the handle is
// never closed and the table lives for the whole process, shared by every Node environment.
Table& T() {
  static Table* t = new Table();
  return *t;
}

template <typename F>
bool Sym(void* h, F* out, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    void* p = dlsym(h, n);
    if (p != nullptr) {
      *out = reinterpret_cast<F>(p);
      return true;
    }
  }
  return false;
}

std::string VersionText(int v) {
  return "CUDA " + std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10) + " (" + std::to_string(v) + ")";
}

void Fail(Error* e, const char* code, std::string message) {
  e->code = code;
  e->message = std::move(message);
}

void Load(Table& t) {
  const char* env = getenv("KYBERNATE_LIBCUDA");
  const char* name = env != nullptr && env[0] != '\0' ? env : "libcuda.so.1";
  dlerror();
  // RTLD_NODELETE: the driver starts threads in cuInit that must never see their code unmapped.
  t.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
  if (t.handle == nullptr) {
    const char* dl = dlerror();
    std::string why = dl != nullptr ? dl : "dlopen failed";
    // dlerror() usually starts with the file name already.
    if (why.compare(0, strlen(name) + 1, std::string(name) + ":") != 0) why = std::string(name) + ": " + why;
    Fail(&t.libraryError, "KYB_ERR_CUDA_NO_DRIVER", "CUDA driver not found (" + why + ")");
    t.devicesError = t.checkpointError = t.libraryError;
    return;
  }
  if (!Sym(t.handle, &t.cuDriverGetVersion, {"cuDriverGetVersion"}) || !Sym(t.handle, &t.cuInit, {"cuInit"})) {
    Fail(&t.libraryError, "KYB_ERR_CUDA_NO_DRIVER",
         std::string("CUDA driver not found (") + name + " lacks cuInit/cuDriverGetVersion)");
    t.devicesError = t.checkpointError = t.libraryError;
    return;
  }
  CUresult r = t.cuDriverGetVersion(&t.version);
  if (r != 0) {
    Fail(&t.libraryError, "KYB_ERR_CUDA_NO_DRIVER",
         std::string("CUDA driver not usable (") + name + ": cuDriverGetVersion returned " + std::to_string(r) + ")");
    t.devicesError = t.checkpointError = t.libraryError;
    return;
  }
  t.level = kLibrary;
  Sym(t.handle, &t.cuGetErrorName, {"cuGetErrorName"});
  Sym(t.handle, &t.cuGetErrorString, {"cuGetErrorString"});

  const char* missing = nullptr;
  if (!Sym(t.handle, &t.cuDeviceGetCount, {"cuDeviceGetCount"})) missing = "cuDeviceGetCount";
  else if (!Sym(t.handle, &t.cuDeviceGet, {"cuDeviceGet"})) missing = "cuDeviceGet";
  else if (!Sym(t.handle, &t.cuDeviceGetName, {"cuDeviceGetName"})) missing = "cuDeviceGetName";
  else if (!Sym(t.handle, &t.cuDeviceGetUuid, {"cuDeviceGetUuid_v2", "cuDeviceGetUuid"})) missing = "cuDeviceGetUuid";
  else if (!Sym(t.handle, &t.cuDeviceTotalMem, {"cuDeviceTotalMem_v2", "cuDeviceTotalMem"})) missing = "cuDeviceTotalMem";
  if (missing != nullptr) {
    Fail(&t.devicesError, "KYB_ERR_CUDA_NO_DRIVER",
         std::string("CUDA driver ") + VersionText(t.version) + " lacks " + missing);
  } else {
    t.level = kDevices;
  }

  bool all = Sym(t.handle, &t.cuCheckpointProcessGetState, {"cuCheckpointProcessGetState"}) &&
             Sym(t.handle, &t.cuCheckpointProcessGetRestoreThreadId, {"cuCheckpointProcessGetRestoreThreadId"}) &&
             Sym(t.handle, &t.cuCheckpointProcessLock, {"cuCheckpointProcessLock"}) &&
             Sym(t.handle, &t.cuCheckpointProcessCheckpoint, {"cuCheckpointProcessCheckpoint"}) &&
             Sym(t.handle, &t.cuCheckpointProcessRestore, {"cuCheckpointProcessRestore"}) &&
             Sym(t.handle, &t.cuCheckpointProcessUnlock, {"cuCheckpointProcessUnlock"});
  if (!all || t.version < kMinCheckpointVersion) {
    Fail(&t.checkpointError, "KYB_ERR_CUDA_DRIVER_TOO_OLD",
         "driver too old for process checkpoint (needs >= 570 / CUDA 12.8, have " + VersionText(t.version) + ")");
  } else if (t.level == kDevices) {
    t.level = kCheckpoint;
  } else {
    t.checkpointError = t.devicesError;
  }
}

Table* Need(Level level, Error* e) {
  Table& t = T();
  std::call_once(t.loaded, [&t] { Load(t); });
  if (t.level >= level) return &t;
  *e = level == kLibrary ? t.libraryError : level == kDevices ? t.devicesError : t.checkpointError;
  return nullptr;
}

// A failed driver call: the code is the driver's own name for the result.
bool DriverFail(Table& t, Error* e, CUresult r, const std::string& what) {
  const char* name = nullptr;
  const char* text = nullptr;
  if (t.cuGetErrorName == nullptr || t.cuGetErrorName(r, &name) != 0 || name == nullptr) name = nullptr;
  if (t.cuGetErrorString == nullptr || t.cuGetErrorString(r, &text) != 0) text = nullptr;
  e->code = name != nullptr ? name : "CUDA_ERROR_" + std::to_string(r);
  e->cuResult = r;
  e->message = what + ": " + e->code + (text != nullptr ? std::string(" (") + text + ")" : "");
  return false;
}

// cuInit once per process; restore requires it in the caller ("persistence mode or cuInit"), and
// device queries need it. Lock/checkpoint/state do not, so a dump never pays for it.
bool Init(Table& t, Error* e) {
  std::lock_guard<std::mutex> lk(t.initMu);
  if (!t.initDone) {
    t.initResult = t.cuInit(0);
    t.initDone = true;
  }
  return t.initResult == 0 || DriverFail(t, e, t.initResult, "cuInit");
}

std::string What(const char* op, pid_t pid) { return std::string(op) + " pid " + std::to_string(pid); }

std::string ReadFile(const std::string& path, bool* ok) {
  std::ifstream f(path);
  *ok = f.good();
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct CgroupMount {
  std::string root;   // the mount's root inside the hierarchy (field 4 of mountinfo)
  std::string point;  // where it is mounted
};

// First mount of a cgroup2 hierarchy (v2 == true) or of the v1 hierarchy holding the freezer.
bool FindMount(bool v2, CgroupMount* out) {
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    size_t dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
    std::string id, parent, devno, root, point, fstype, source, super;
    pre >> id >> parent >> devno >> root >> point;
    post >> fstype >> source >> super;
    bool match = v2 ? fstype == "cgroup2"
                    : fstype == "cgroup" && ("," + super + ",").find(",freezer,") != std::string::npos;
    if (match) {
      *out = {root, point};
      return true;
    }
  }
  return false;
}

std::string CgroupDir(const CgroupMount& m, std::string path) {
  if (m.root != "/" && path.compare(0, m.root.size(), m.root) == 0) path = path.substr(m.root.size());
  return m.point + (path.empty() || path[0] == '/' ? "" : "/") + path;
}

}  // namespace

bool CheckRunnable(pid_t pid, Error* e) {
  if (pid <= 0) {
    Fail(e, "KYB_ERR_CUDA_INVALID", "pid must be > 0");
    return false;
  }
  const std::string proc = "/proc/" + std::to_string(pid);
  bool ok;
  std::string stat = ReadFile(proc + "/stat", &ok);
  size_t paren = stat.rfind(')');
  if (!ok || paren == std::string::npos || paren + 2 >= stat.size()) {
    e->code = "ESRCH";
    e->err = ESRCH;
    e->message = "no such process: " + std::to_string(pid);
    return false;
  }
  char state = stat[paren + 2];
  if (state == 'T' || state == 't') {
    Fail(e, "KYB_ERR_CUDA_FROZEN", "process " + std::to_string(pid) +
         " is stopped (SIGSTOP or ptrace); a CUDA checkpoint call on it would never return");
    return false;
  }
  std::istringstream cg(ReadFile(proc + "/cgroup", &ok));
  std::string line;
  while (std::getline(cg, line)) {
    size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    CgroupMount m;
    std::string frozenAt;
    if (line.compare(0, a, "0") == 0 && controllers.empty()) {
      if (!FindMount(true, &m)) continue;
      const std::string dir = CgroupDir(m, path);
      bool have;
      std::string freeze = ReadFile(dir + "/cgroup.freeze", &have);
      std::string events = ReadFile(dir + "/cgroup.events", &have);
      // cgroup.freeze is the request (also set while freezing); "frozen 1" also covers a frozen parent.
      if (freeze.compare(0, 1, "1") == 0 || events.find("frozen 1") != std::string::npos) frozenAt = dir;
    } else if (("," + controllers + ",").find(",freezer,") != std::string::npos) {
      if (!FindMount(false, &m)) continue;
      const std::string dir = CgroupDir(m, path);
      bool have;
      std::string st = ReadFile(dir + "/freezer.state", &have);
      if (have && st.compare(0, 6, "THAWED") != 0) frozenAt = dir;
    }
    if (!frozenAt.empty()) {
      Fail(e, "KYB_ERR_CUDA_FROZEN", "process " + std::to_string(pid) + " is in a frozen cgroup (" + frozenAt +
           "); thaw it first: a CUDA checkpoint call on a frozen process never returns");
      return false;
    }
  }
  return true;
}

bool DriverVersion(int* version, Error* e) {
  Table* t = Need(kLibrary, e);
  if (t == nullptr) return false;
  *version = t->version;
  return true;
}

bool ListGpus(std::vector<Gpu>* out, Error* e) {
  Table* t = Need(kDevices, e);
  if (t == nullptr || !Init(*t, e)) return false;
  int n = 0;
  CUresult r = t->cuDeviceGetCount(&n);
  if (r != 0) return DriverFail(*t, e, r, "cuDeviceGetCount");
  for (int i = 0; i < n; ++i) {
    CUdevice d;
    if ((r = t->cuDeviceGet(&d, i)) != 0) return DriverFail(*t, e, r, "cuDeviceGet");
    Gpu g;
    g.index = i;
    char name[256] = {0};
    if ((r = t->cuDeviceGetName(name, sizeof name - 1, d)) != 0) return DriverFail(*t, e, r, "cuDeviceGetName");
    g.name = name;
    Uuid u;
    if ((r = t->cuDeviceGetUuid(&u, d)) != 0) return DriverFail(*t, e, r, "cuDeviceGetUuid");
    g.uuid = FormatUuid(u);
    size_t mem = 0;
    if ((r = t->cuDeviceTotalMem(&mem, d)) != 0) return DriverFail(*t, e, r, "cuDeviceTotalMem");
    g.memoryBytes = mem;
    out->push_back(std::move(g));
  }
  return true;
}

bool GetState(pid_t pid, int* state, Error* e) {
  Table* t = Need(kCheckpoint, e);
  if (t == nullptr || !CheckRunnable(pid, e)) return false;
  CUresult r = t->cuCheckpointProcessGetState(pid, state);
  return r == 0 || DriverFail(*t, e, r, What("getState", pid));
}

bool GetRestoreThreadId(pid_t pid, int* tid, Error* e) {
  Table* t = Need(kCheckpoint, e);
  if (t == nullptr || !CheckRunnable(pid, e)) return false;
  CUresult r = t->cuCheckpointProcessGetRestoreThreadId(pid, tid);
  return r == 0 || DriverFail(*t, e, r, What("getRestoreThreadId", pid));
}

bool Lock(pid_t pid, uint32_t timeoutMs, Error* e) {
  Table* t = Need(kCheckpoint, e);
  if (t == nullptr || !CheckRunnable(pid, e)) return false;
  LockArgs args;
  memset(&args, 0, sizeof args);
  args.timeoutMs = timeoutMs;
  CUresult r = t->cuCheckpointProcessLock(pid, &args);
  return r == 0 || DriverFail(*t, e, r, What("lock", pid));
}

bool Checkpoint(pid_t pid, Error* e) {
  Table* t = Need(kCheckpoint, e);
  if (t == nullptr || !CheckRunnable(pid, e)) return false;
  CheckpointArgs args;
  memset(&args, 0, sizeof args);
  CUresult r = t->cuCheckpointProcessCheckpoint(pid, &args);
  return r == 0 || DriverFail(*t, e, r, What("checkpoint", pid));
}

bool Restore(pid_t pid, const std::vector<GpuPair>& pairs, Error* e) {
  Table* t = Need(kCheckpoint, e);
  if (t == nullptr || !CheckRunnable(pid, e) || !Init(*t, e)) return false;
  std::vector<GpuPair> copy(pairs);  // the driver takes a non-const pointer
  RestoreArgs args;
  memset(&args, 0, sizeof args);
  if (!copy.empty()) {
    args.gpuPairs = copy.data();
    args.gpuPairsCount = static_cast<uint32_t>(copy.size());
  }
  CUresult r = t->cuCheckpointProcessRestore(pid, &args);
  return r == 0 || DriverFail(*t, e, r, What("restore", pid));
}

bool Unlock(pid_t pid, Error* e) {
  Table* t = Need(kCheckpoint, e);
  if (t == nullptr || !CheckRunnable(pid, e)) return false;
  UnlockArgs args;
  memset(&args, 0, sizeof args);
  CUresult r = t->cuCheckpointProcessUnlock(pid, &args);
  return r == 0 || DriverFail(*t, e, r, What("unlock", pid));
}

bool ParseUuid(const std::string& in, Uuid* out) {
  std::string s = in.compare(0, 4, "GPU-") == 0 ? in.substr(4) : in;
  std::string hex;
  for (char c : s) {
    if (c == '-') continue;
    if (!isxdigit(static_cast<unsigned char>(c))) return false;
    hex += c;
  }
  if (hex.size() != 32) return false;
  for (int i = 0; i < 16; ++i) out->bytes[i] = static_cast<unsigned char>(strtoul(hex.substr(i * 2, 2).c_str(), nullptr, 16));
  return true;
}

std::string FormatUuid(const Uuid& u) {
  char buf[64];
  const unsigned char* b = u.bytes;
  snprintf(buf, sizeof buf, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
           b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return buf;
}

}  // namespace cuda
}  // namespace kyb
