// A spare becoming a container group's daemon: it binds the group's socket (the same race-safe bind a
// launched daemon does), takes the identity `start` was given (environment, flags, bundle, shim cgroup)
// and wires the Task service, exactly as daemon.ts does for a daemon launched by the Node `start`.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { dropUnsettledToolVersions } from '../../host/facts';
import { reaper } from '../../native/reaper';
import { GroupListener, bindGroupSocket } from '../daemon-socket';
import { serveGroup } from '../daemon';
import type { ShimFlags } from '../flags';
import type { StartPlan } from '../manager/start';
import { joinCgroup } from '../manager/shim-cgroup';
import { ensureSpare } from './launch';
import type { SpareRequest } from './protocol';

/** A claim that failed after the group socket was bound: the process must exit once it has answered. */
export class ClaimFailed extends Error {
  constructor(readonly reason: unknown) {
    super(reason instanceof Error ? reason.message : String(reason), { cause: reason });
  }
}

export interface ClaimResult {
  /** False when a daemon of the group won the bind: the caller reports its address and stays a spare. */
  claimed: boolean;
  /** Runs once the answer reached the front. */
  after?: () => void;
}

function takeEnvironment(env: NodeJS.ProcessEnv): void {
  for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, env);
}

/** `stopSpare` closes the spare socket; it runs once the group socket is ours and before anything can fail. */
export async function claim(flags: ShimFlags, req: SpareRequest, plan: StartPlan, env: NodeJS.ProcessEnv,
  stopSpare: () => void): Promise<ClaimResult> {
  const claimedAt = performance.now();
  const group = new GroupListener();
  if (!(await bindGroupSocket(plan.sock, group.server))) return { claimed: false };
  stopSpare();
  try {
    takeEnvironment(env);
    if (plan.bootstrap?.ttrpcAddress) process.env.TTRPC_ADDRESS = plan.bootstrap.ttrpcAddress;
    // The next spare inherits our cgroup: booted before we join the container's shim cgroup, else later,
    // off the path of this start's answer.
    if (plan.shimCgroup) {
      await ensureSpare();
      joinCgroup(process.pid, plan.shimCgroup);
    }
    try {
      os.setPriority(0); // spares boot niced; a daemon serves at normal priority
    } catch {
      // not permitted (not root): it serves niced
    }
    // What `ps` shows for a daemon that `start` launched (those flags are its argv).
    process.title = ['containerd-shim-kybernate-v2', '-namespace', flags.namespace, '-id', flags.id, '-address', flags.address,
      '-publish-binary', flags.publishBinary, '-socket', plan.sock].join(' ');
    dropUnsettledToolVersions();
    reaper.start();
    await serveGroup({ ...flags, socket: plan.sock }, req.cwd, group, claimedAt);
  } catch (err) {
    // Half a daemon must not keep the group's socket: containerd would connect and wait forever. The
    // socket goes, and the process ends once the front has the error (as a launched daemon that failed is
    // killed by `start`).
    group.server.close();
    fs.rmSync(plan.sock, { force: true });
    throw new ClaimFailed(err);
  }
  return { claimed: true, after: plan.shimCgroup ? undefined : () => void ensureSpare() };
}
