// What containerd's CRI CheckpointContainer expects to find next to a checkpoint of our runtime.
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * containerd 2.1-2.3's CRI CheckpointContainer copies CRIU's stats-dump from its own container directory
 * and fails without it; it points runc's work path there, but sends no options to other runtimes. That
 * directory is <cri root>/containers/<id>, and CRI's own mounts (hostname, hosts, resolv.conf under
 * <cri root>/sandboxes/<sandbox>) say where <cri root> is.
 */
export function keepCriStatsDump(spec: Record<string, unknown>, id: string, workPath: string): void {
  const mounts = (spec.mounts ?? []) as Array<{ source?: string }>;
  const root = mounts.map((m) => /^(\/.*\/io\.containerd\.grpc\.v1\.cri)\/sandboxes\//.exec(m.source ?? '')?.[1]).find((r) => r !== undefined);
  if (!root) return;
  const dir = path.join(root, 'containers', id);
  try {
    if (fs.statSync(dir).isDirectory()) fs.copyFileSync(path.join(workPath, 'stats-dump'), path.join(dir, 'stats-dump'));
  } catch {
    // not a CRI container after all, or CRIU wrote no stats
  }
}

