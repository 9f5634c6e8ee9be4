// What containerd's CRI CheckpointContainer expects to find next to a checkpoint of our runtime.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** CRIU's timing statistics and its log, both in its work directory; checkpointctl reads them from the archive. */
const CRIU_FILES = ['stats-dump', 'dump.log'] as const;

/** The directory CRI archives (and removes afterwards), inside <cri root>/containers/<id>. */
const CRI_CHECKPOINT_DIR = 'ctrd-checkpoint';

/**
 * Puts CRIU's stats-dump and dump.log where containerd's CRI CheckpointContainer archives them from.
 * CRI points CRIU's work directory there only for io.containerd.runc.v2 (WorkPath in its checkpoint
 * options); other runtimes get no options, so the files are in our own `workPath` and are copied:
 * - containerd 2.1.9+ / 2.3.2+: CRI makes <cri root>/containers/<id>/ctrd-checkpoint before the
 *   checkpoint, archives it whole and removes it: the files go there.
 * - containerd 2.1.0-2.1.8 / 2.3.0-2.3.1: CRI makes that directory only after the checkpoint and copies
 *   stats-dump (failing without it) and dump.log into it from <cri root>/containers/<id>: they go there.
 * <cri root> is where CRI's own mounts of the container (hostname, hosts, resolv.conf under
 * <cri root>/sandboxes/<sandbox>) come from. Best effort: a container CRI did not make is left alone.
 */
export function keepCriStatsDump(spec: Record<string, unknown>, id: string, workPath: string): void {
  const mounts = (spec.mounts ?? []) as Array<{ source?: string }>;
  const root = mounts.map((m) => /^(\/.*\/io\.containerd\.grpc\.v1\.cri)\/sandboxes\//.exec(m.source ?? '')?.[1]).find((r) => r !== undefined);
  if (!root) return;
  const containerDir = path.join(root, 'containers', id);
  const checkpointDir = path.join(containerDir, CRI_CHECKPOINT_DIR);
  const dir = isDir(checkpointDir) ? checkpointDir : containerDir;
  if (!isDir(dir)) return;
  for (const name of CRIU_FILES) {
    try {
      // CRI writes its own checkpoint files 0600: these are the node's, not the workload's.
      fs.copyFileSync(path.join(workPath, name), path.join(dir, name));
      fs.chmodSync(path.join(dir, name), 0o600);
    } catch {
      // CRIU wrote no such file, or the directory went away
    }
  }
}

function isDir(p: string): boolean {
  try {
    return fs.lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}
