/* The baseline for the GPU suite: the same driver calls the addon makes, from plain C against
 * CUDA's own cuda.h and libcuda. Usage: raw-checkpoint <pid>. cuInit runs once at start (as the
 * addon's first listGpus does) and prints "ready"; then a "suspend" line on stdin does lock (timeout 10 s) +
 * checkpoint on <pid>, and a "resume" line restore + unlock; each prints one JSON line of per-call
 * milliseconds, or {"error": ...} and exits 1 on the first failure. Split in two so that the suite
 * makes the same checks while checkpointed as it does for the addon. */
#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int check(CUresult r, const char *what) {
  if (r == CUDA_SUCCESS) return 1;
  const char *name = "?";
  cuGetErrorName(r, &name);
  printf("{\"error\":\"%s: %s\"}\n", what, name);
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: raw-checkpoint <pid>\n");
    return 2;
  }
  int pid = atoi(argv[1]);
  if (!check(cuInit(0), "cuInit")) return 1;
  printf("ready\n");
  fflush(stdout);
  char line[64];
  while (fgets(line, sizeof line, stdin) != NULL) {
    if (strncmp(line, "suspend", 7) == 0) {
      CUcheckpointLockArgs lock;
      CUcheckpointCheckpointArgs ckpt;
      memset(&lock, 0, sizeof lock);
      memset(&ckpt, 0, sizeof ckpt);
      lock.timeoutMs = 10000;
      double t0 = now_ms();
      if (!check(cuCheckpointProcessLock(pid, &lock), "lock")) return 1;
      double t1 = now_ms();
      if (!check(cuCheckpointProcessCheckpoint(pid, &ckpt), "checkpoint")) return 1;
      double t2 = now_ms();
      printf("{\"lockMs\":%.3f,\"checkpointMs\":%.3f}\n", t1 - t0, t2 - t1);
    } else if (strncmp(line, "resume", 6) == 0) {
      CUcheckpointRestoreArgs rest;
      CUcheckpointUnlockArgs unlock;
      memset(&rest, 0, sizeof rest);
      memset(&unlock, 0, sizeof unlock);
      double t0 = now_ms();
      if (!check(cuCheckpointProcessRestore(pid, &rest), "restore")) return 1;
      double t1 = now_ms();
      if (!check(cuCheckpointProcessUnlock(pid, &unlock), "unlock")) return 1;
      double t2 = now_ms();
      printf("{\"restoreMs\":%.3f,\"unlockMs\":%.3f}\n", t1 - t0, t2 - t1);
    } else {
      continue;
    }
    fflush(stdout);
  }
  return 0;
}
