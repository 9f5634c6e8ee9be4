/* The baseline for the GPU suite: the same driver calls the addon makes, from plain C against
 * CUDA's own cuda.h and libcuda. Usage: raw-checkpoint <pid>. cuInit runs once at start (as the
 * addon's first listGpus does) and prints "ready"; then every "cycle" line on stdin does lock (timeout 10 s),
 * checkpoint, restore, unlock on <pid> and prints one JSON line of per-call milliseconds, or
 * {"error": ...} and exits 1 on the first failure. */
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
    if (strncmp(line, "cycle", 5) != 0) continue;
    CUcheckpointLockArgs lock;
    CUcheckpointCheckpointArgs ckpt;
    CUcheckpointRestoreArgs rest;
    CUcheckpointUnlockArgs unlock;
    memset(&lock, 0, sizeof lock);
    memset(&ckpt, 0, sizeof ckpt);
    memset(&rest, 0, sizeof rest);
    memset(&unlock, 0, sizeof unlock);
    lock.timeoutMs = 10000;
    double t0 = now_ms();
    if (!check(cuCheckpointProcessLock(pid, &lock), "lock")) return 1;
    double t1 = now_ms();
    if (!check(cuCheckpointProcessCheckpoint(pid, &ckpt), "checkpoint")) return 1;
    double t2 = now_ms();
    if (!check(cuCheckpointProcessRestore(pid, &rest), "restore")) return 1;
    double t3 = now_ms();
    if (!check(cuCheckpointProcessUnlock(pid, &unlock), "unlock")) return 1;
    double t4 = now_ms();
    printf("{\"lockMs\":%.3f,\"checkpointMs\":%.3f,\"restoreMs\":%.3f,\"unlockMs\":%.3f}\n", t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    fflush(stdout);
  }
  return 0;
}
