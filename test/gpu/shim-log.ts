// What the container suite reads back from the shims' own log lines (containerd copies them into
// containerd.log): the shim's Create time of each restore, its daemons' boot times, and the steps of its
// 'restored' lines, added to the suite's samples as their parts.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { socketAddress } from '../../src/shim/address';
import type { Report, Sample } from './report';

export interface ShimLine { msg?: string; id?: string; ms?: number; bootMs?: number; socket?: string; steps?: Array<{ step: string; ms: number }> }

/** The shim's log lines with message `msg` in containerd's log file, oldest first. */
export function shimLines(containerdLog: string, msg: string): ShimLine[] {
  let text = '';
  try { text = fs.readFileSync(containerdLog, 'utf8'); } catch { return []; }
  const found: ShimLine[] = [];
  for (const raw of text.split('\n')) {
    if (!raw.includes(msg)) continue;
    // The shim's pino line either verbatim or quoted inside containerd's own msg="...".
    const line = raw.includes('\\"') ? raw.replace(/\\"/g, '"') : raw;
    const start = line.indexOf('{');
    const end = line.lastIndexOf('}');
    if (start < 0 || end <= start) continue;
    try {
      const o = JSON.parse(line.slice(start, end + 1)) as ShimLine;
      if (o.msg === msg) found.push(o);
    } catch { /* another line mentioning the message */ }
  }
  return found;
}

/** The shim's 'restored' log lines for `id`, oldest first, as step → ms. */
export function restoredSteps(containerdLog: string, id: string): Array<Record<string, number>> {
  return shimLines(containerdLog, 'restored').filter((o) => o.id === id && o.steps)
    .map((o) => Object.fromEntries(o.steps!.map((x) => [x.step, Math.round(x.ms * 10) / 10])));
}

/**
 * Adds to each of `op`'s restore samples of `id` (workload `workload`, path ours) the shim's own Create time
 * ('created from a checkpoint') and, where a daemon was started for it, that daemon's exec → serving time
 * ('shim listening' on the container's group socket; a warm group shim logs none, the `start` of its
 * restores finds it serving). Returns how many daemons started on that socket during the restores.
 */
export function createBreakdown(o: { report: Report; containerdLog: string; address: string; namespace: string; log(s: string): void },
  workload: string, op: Sample['op'], id: string, group: string): number {
  const created = shimLines(o.containerdLog, 'created from a checkpoint').filter((l) => l.id === id);
  const sock = path.basename(socketAddress(o.address, o.namespace, group));
  // The first daemon on the socket served the container's first start, before any restore.
  const boots = shimLines(o.containerdLog, 'shim listening').filter((l) => typeof l.socket === 'string' && path.basename(l.socket) === sock).slice(1);
  const samples = o.report.samples.filter((s) => s.workload === workload && s.path === 'ours' && s.op === op).sort((x, y) => x.round - y.round);
  for (const [i, s] of samples.entries()) {
    s.parts = { ...s.parts };
    if (created[i]?.ms !== undefined) s.parts.shimCreate = Math.round(created[i]!.ms! * 10) / 10;
    if (boots.length === samples.length && boots[i]?.bootMs !== undefined) s.parts.daemonBoot = boots[i]!.bootMs!;
  }
  if (created.length !== samples.length) o.log(`${id}: ${created.length} 'created from a checkpoint' lines for ${samples.length} restores`);
  o.log(`${id}: ${boots.length} shim daemons started on its group socket during ${samples.length} restores`);
  return boots.length;
}

/** The steps a checkpoint's kybernate-manifest.json records (the shim's own timing of it), as step → ms. */
export function manifestSteps(dir: string): Record<string, number> | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'kybernate-manifest.json'), 'utf8')) as { steps?: Array<{ step: string; ms: number }> };
    return Object.fromEntries((m.steps ?? []).map((s) => [s.step, Math.round(s.ms * 10) / 10]));
  } catch {
    return undefined;
  }
}
