// CRIU's network lock in a sandbox. Dumping a container whose network namespace is external (joined by
// path, as runc tells CRIU), CRIU "locks" that namespace with iptables: a chain CRIU, jumped to first from
// INPUT and OUTPUT, accepting only CRIU's own marked packets and dropping the rest (IPv4 and IPv6). After a
// dump with --exit it leaves the lock in place for the restore, whose end removes it. Meanwhile a client's
// SYN is dropped, not refused, so a connection attempted while the workload is at zero waits (SYN
// retransmits) and completes once it is restored.
//
// A workload started afresh (not restored) in a sandbox that still holds a checkpointed workload's lock
// could never be reached: releaseCriuLock removes the lock first, exactly the rules CRIU put there and
// nothing else. Idempotent; a sandbox without the lock (or without iptables at all: then CRIU cannot have
// locked it) is left as it is.
import { KybernateError } from '../errors';
import { which } from '../host/versions';
import { run } from '../native/run';
import { validateSandboxName } from './config';
import { netnsExists } from './netns';

const TIMEOUT_MS = 15_000;
const FAMILIES = [['iptables-save', 'iptables-restore'], ['ip6tables-save', 'ip6tables-restore']] as const;

/** `ip netns exec NAME tool args` with `input`; rejects with the tool's message. */
async function inSandbox(name: string, tool: string, args: string[], input?: string): Promise<string> {
  const ip = which('ip');
  if (!ip) throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', 'ip (iproute2) not found: apt-get install iproute2');
  const r = await run(ip, ['netns', 'exec', name, tool, ...args], { timeoutMs: TIMEOUT_MS, ...(input === undefined ? {} : { input }) });
  if (r.status !== 0 || r.timedOut) {
    throw new KybernateError('KYB_ERR_RUNTIME', `${tool} in sandbox ${name}: ${r.stderr.toString('utf8').trim() || `exited with status ${r.status}`}`);
  }
  return r.stdout.toString('utf8');
}

/** Whether CRIU's lock is in sandbox `name` (either family). */
export async function hasCriuLock(name: string): Promise<boolean> {
  validateSandboxName(name);
  if (!netnsExists(name)) return false;
  for (const [save] of FAMILIES) {
    const bin = which(save);
    if (bin && /^:CRIU /m.test(await inSandbox(name, bin, ['-t', 'filter']))) return true;
  }
  return false;
}

/** Removes CRIU's lock from sandbox `name`; resolves to whether there was one. */
export async function releaseCriuLock(name: string): Promise<boolean> {
  validateSandboxName(name);
  if (!netnsExists(name)) return false;
  let released = false;
  for (const [save, restore] of FAMILIES) {
    const saveBin = which(save);
    const restoreBin = which(restore);
    if (!saveBin || !restoreBin) continue;
    const rules = await inSandbox(name, saveBin, ['-t', 'filter']);
    if (!/^:CRIU /m.test(rules)) continue;
    // Only the jumps that are there: iptables-restore applies the whole table or nothing.
    const jumps = ['INPUT', 'OUTPUT'].filter((c) => new RegExp(`^-A ${c} -j CRIU$`, 'm').test(rules)).map((c) => `-D ${c} -j CRIU`);
    await inSandbox(name, restoreBin, ['--noflush'], ['*filter', ...jumps, '-F CRIU', '-X CRIU', 'COMMIT', ''].join('\n'));
    released = true;
  }
  return released;
}
