// The Agent service's handlers: requests checked and turned into calls on the view (workloads.ts), the
// operation queue (operations.ts) and the operation functions; answers turned into messages. The one place
// errors become gRPC statuses is fail() below: toStatus() for the status, the code in the `kyb-code`
// trailer.
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import Long from 'long';
import type { Logger } from 'pino';
import { KYB_CODE_KEY, type AgentMethod, type RequestOf, type ResponseOf } from '../agent-api/definition';
import { KybernateError, toStatus } from '../errors';
import type { kybernate } from '../gen/proto';
import { validateId } from '../ids';
import { toTimestamp } from '../timestamp';
import { REVISION, VERSION } from '../version';
import { checkpointWorkload, restoreWorkload } from './checkpoint';
import type { AgentContext, CheckpointWorkloadRequest, OpResult, RestoreWorkloadRequest } from './context';
import { stateValue, type AgentEvents } from './events';
import { asKybernateError } from './failure';
import { gpuInventory } from './gpus';
import type { OperationKind, Operations } from './operations';
import { SnapshotDirectory, type SnapshotInfo } from './snapshots';
import { SnapshotTiers, isTier, type MoveResult, type TierName } from './tiers';
import { Hsm } from './hsm';
import type { PolicyConfig } from '../storage/policy';
import type { ChunkStore } from '../storage/chunk-store';
import { resumeWorkload, suspendWorkload } from './suspend';
import type { SnapshotIndex, WorkloadView } from './workloads';

type Workload = kybernate.agent.v1.IWorkload;

/** An Events client this many events behind is dropped (RESOURCE_EXHAUSTED), not buffered further. */
export const MAX_EVENTS_BEHIND = 256;
const HEALTH_TIMEOUT_MS = 5_000;
const PROGRESS_EVERY_MS = 250;

/** Where checkpoints, restores and snapshots are done (checkpoint.ts in the snapshot directory, tiers.ts below it). */
export interface SnapshotBackend {
  index: SnapshotIndex;
  checkpoint(ctx: AgentContext, req: CheckpointWorkloadRequest & { tier?: string }): Promise<OpResult>;
  restore(ctx: AgentContext, req: RestoreWorkloadRequest): Promise<OpResult>;
  /** Complete snapshots in every tier, of one namespace and container when given. */
  list(namespace?: string, id?: string): Promise<SnapshotInfo[]>;
  /** Deletes a snapshot (every tier) by id or unique hex prefix; KYB_ERR_NOT_FOUND when none matches. */
  delete(ref: string): Promise<SnapshotInfo>;
  /** Moves a snapshot to another tier; onProgress gets its bytes so far. */
  move(ref: string, tier: string, onProgress?: (s: SnapshotInfo, done: number, total: number) => void): Promise<MoveResult>;
  /** Pins (tier) or unpins ('' ) a snapshot's copy for the storage policy. */
  pin(ref: string, tier: string): Promise<SnapshotInfo>;
  verify: SnapshotTiers['verify'];
  collectGarbage: SnapshotTiers['collectGarbage'];
  /** Finishes what a killed agent left in the directory (deletions cut short, abandoned checkpoints). */
  removeOrphans(): Promise<string[]>;
  /** Reads the chunk tiers' indexes and starts the storage policy (start). */
  load(warn: (msg: string) => void): Promise<void>;
  /** Stops the storage policy's timer. */
  close(): void;
}

/**
 * The snapshot directory at `snapshotDir` (the ram tier: plain files) and the chunk tiers below it, with the
 * bytes and GPU memory its operations move counted. A checkpoint into a lower tier is written as plain files
 * and moved down before it returns; a restore from a lower tier brings the snapshot into ram first.
 */
export function snapshotBackend(snapshotDir: string, stores: Partial<Record<'disk' | 's3', ChunkStore>> = {},
  policy?: { config: PolicyConfig; log: Logger }): SnapshotBackend {
  const dir = new SnapshotDirectory(snapshotDir);
  const tiers = new SnapshotTiers(dir, stores);
  // The storage policy runs only where the agent's config file has a "storage" key.
  const hsm = policy && new Hsm(tiers, policy.config, snapshotDir, policy.log);
  const withPin = (s: SnapshotInfo): SnapshotInfo => ({ ...s, pinned: hsm?.pinned(s.id) });
  const on = (ctx: AgentContext) => ({ containerd: ctx.containerd, containerdState: ctx.containerdState, snapshots: dir });
  const tierOf = (t: string | undefined): TierName => {
    const tier = t || 'ram';
    if (!isTier(tier)) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', `tier ${JSON.stringify(t)}: ram, disk or s3`);
    if (!tiers.tiers.includes(tier)) throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `the ${tier} tier is not configured on this agent (its config file's "storage" key)`);
    return tier;
  };
  return {
    index: tiers,
    checkpoint: async (ctx, req) => {
      const tier = tierOf(req.tier);
      const r = await checkpointWorkload(on(ctx), req);
      ctx.metrics.bytesWritten(r.snapshot.sizeBytes);
      if (req.exit) ctx.metrics.gpuMemoryFreed('checkpoint', r.snapshot.gpuMemoryBytes);
      if (tier === 'ram') {
        void hsm?.kick();
        return { ...r, snapshot: { ...r.snapshot, tiers: ['ram'], storedBytes: r.snapshot.sizeBytes } };
      }
      const m = await tiers.move(r.snapshot.id, tier);
      void hsm?.kick();
      return {
        ...r, snapshot: m.snapshot, durationMs: r.durationMs + m.durationMs,
        steps: [...r.steps, { name: `move-${tier}`, durationMs: m.durationMs, bytes: m.bytesWritten }],
      };
    },
    restore: async (ctx, req) => {
      const { namespace, id } = req;
      const t0 = performance.now();
      const s = req.snapshot ? await tiers.find(req.snapshot, { namespace, id }) : await tiers.newest(namespace, id);
      // None anywhere: restoreWorkload refuses it with the reason that comes first (a running task, no container).
      if (!s) return restoreWorkload(on(ctx), req);
      const promoted = (s.tiers ?? []).includes('ram') ? undefined : await tiers.promote(s.id, { namespace, id });
      const promoteMs = performance.now() - t0;
      hsm?.touch(s.id);
      // Held: the storage policy moves nothing of it while the restore reads its ram copy.
      const r = await tiers.hold(s.id, () => restoreWorkload(on(ctx), { ...req, snapshot: s.id }), { namespace, id });
      ctx.metrics.bytesRead(r.snapshot.sizeBytes);
      void hsm?.kick();
      if (!promoted) return r;
      return { ...r, durationMs: r.durationMs + promoteMs, steps: [{ name: `promote-${(s.tiers ?? [])[0]}`, durationMs: promoteMs, bytes: s.sizeBytes }, ...r.steps] };
    },
    list: async (namespace, id) => (await tiers.list(namespace, id)).map(withPin),
    delete: (ref) => tiers.delete(ref),
    move: async (ref, tier, onProgress) => {
      const s = await tiers.find(ref);
      const m = await tiers.move(s.id, tierOf(tier), onProgress && ((done, total) => onProgress(s, done, total)));
      void hsm?.kick();
      return { ...m, snapshot: withPin(m.snapshot) };
    },
    pin: async (ref, tier) => {
      if (!hsm) throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', 'pins are for the storage policy, which runs only with a "storage" key in the agent\'s config file');
      await hsm.pin(ref, tier ? tierOf(tier) : undefined);
      return withPin(await tiers.find(ref));
    },
    verify: (ref) => tiers.verify(ref),
    collectGarbage: (graceMs) => tiers.collectGarbage(graceMs),
    removeOrphans: () => dir.removeOrphans(),
    load: async (warn) => {
      await tiers.load(warn);
      hsm?.start();
    },
    close: () => hsm?.stop(),
  };
}

export interface ServiceDeps {
  ctx: AgentContext;
  operations: Operations;
  events: AgentEvents;
  backend: SnapshotBackend;
  /** Aborts when the agent shuts down: running operations get it, Events streams end. */
  shutdown: AbortSignal;
  startedAt: number;
}

/** The error as a gRPC status with its code in the trailer: the one place this mapping happens. */
export function fail(err: unknown): grpc.ServerErrorResponse {
  const e = asKybernateError(err);
  const { code, message } = toStatus(e);
  const metadata = new grpc.Metadata();
  metadata.set(KYB_CODE_KEY, e.code);
  return Object.assign(new Error(message), { code, details: message, metadata });
}

/** A call's cancellation and deadline as one signal (aborted with KYB_ERR_CANCELLED or KYB_ERR_DEADLINE). */
function callSignal(call: grpc.ServerUnaryCall<unknown, unknown>): { signal: AbortSignal; done(): void } {
  const ac = new AbortController();
  const onCancel = (): void => ac.abort(new KybernateError('KYB_ERR_CANCELLED', 'the client cancelled the call'));
  call.once('cancelled', onCancel);
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  const timer = Number.isFinite(at)
    ? setTimeout(() => ac.abort(new KybernateError('KYB_ERR_DEADLINE', 'the call\'s deadline passed')), Math.min(Math.max(at - Date.now(), 0), 2 ** 31 - 1))
    : undefined;
  return { signal: ac.signal, done: () => { clearTimeout(timer); call.off('cancelled', onCancel); } };
}

export function agentHandlers(deps: ServiceDeps, log: Logger): grpc.UntypedServiceImplementation {
  const { ctx, operations, events, backend } = deps;

  function unary<K extends Exclude<AgentMethod, 'Events'>>(name: K,
    fn: (req: RequestOf<K>, signal: AbortSignal) => Promise<ResponseOf<K>>): grpc.handleUnaryCall<RequestOf<K>, ResponseOf<K>> {
    return (call, callback) => {
      const { signal, done } = callSignal(call);
      fn(call.request, signal).then((res) => callback(null, res), (err: unknown) => {
        const e = fail(err);
        log.warn({ method: name, code: e.metadata?.get(KYB_CODE_KEY)[0], err: e.details }, 'call failed');
        callback(e);
      }).finally(done);
    };
  }

  const workload = (v: WorkloadView, operation = operations.current(v.namespace, v.id) ?? ''): Workload => ({
    namespace: v.namespace, id: v.id, state: stateValue(v.state), pid: v.pid, image: v.image, operation,
    gpuMemoryBytes: u64(v.gpuMemoryBytes), savedGpuMemoryBytes: u64(v.savedGpuMemoryBytes),
    snapshot: v.snapshot ? snapshot(v.snapshot) : null, since: v.since ? toTimestamp(v.since) : null,
    cudaPids: v.cudaPids, taskStatus: v.taskStatus,
  });

  /** Runs one operation in the workload's turn; its whole answer is what a retry of its request id gets. */
  function operation(kind: OperationKind, req: { namespace?: string | null; id?: string | null; requestId?: string | null },
    signal: AbortSignal, run: (namespace: string, id: string) => Promise<OpResult>): Promise<ResponseOf<'Suspend'>> {
    const { namespace, id } = ids(req);
    return operations.run({
      kind, namespace, id, requestId: req.requestId ?? '', signal,
      run: async () => {
        const r = await run(namespace, id);
        // One view after the operation: the one the events compare (computed in the workload's turn) is the
        // reply's too; looked up again only when that one could not be had (the lookup's error is the answer).
        const seen = await events.refresh(namespace, id);
        const w = r.workload ?? seen ?? await ctx.workloads.get(namespace, id);
        return {
          workload: workload(w, ''), durationMs: r.durationMs, cudaPids: r.cudaPids,
          steps: r.steps.map((s) => ({ name: s.name, durationMs: s.durationMs, bytes: u64(s.bytes ?? 0) })),
          snapshot: r.snapshot ? snapshot(r.snapshot) : null,
        };
      },
    });
  }

  const handlers: { [K in AgentMethod]: K extends 'Events' ? grpc.handleServerStreamingCall<RequestOf<K>, ResponseOf<K>>
    : grpc.handleUnaryCall<RequestOf<K>, ResponseOf<K>> } = {
    List: unary('List', async (req, signal) => ({ workloads: (await ctx.workloads.list(req.namespace ?? '', { signal })).map((v) => workload(v)) })),
    Get: unary('Get', async (req, signal) => {
      const { namespace, id } = ids(req);
      return workload(await ctx.workloads.get(namespace, id, { signal }));
    }),
    Suspend: unary('Suspend', (req, signal) => operation('suspend', req, signal, (namespace, id) =>
      suspendWorkload(ctx, { namespace, id, lockTimeoutMs: req.lockTimeoutMs || undefined, signal: deps.shutdown }))),
    Resume: unary('Resume', (req, signal) => operation('resume', req, signal, (namespace, id) =>
      resumeWorkload(ctx, { namespace, id, signal: deps.shutdown }))),
    Checkpoint: unary('Checkpoint', (req, signal) => operation('checkpoint', req, signal, (namespace, id) =>
      backend.checkpoint(ctx, { namespace, id, exit: req.exit ?? false, tier: req.tier || undefined, signal: deps.shutdown }))),
    Restore: unary('Restore', (req, signal) => operation('restore', req, signal, (namespace, id) =>
      backend.restore(ctx, { namespace, id, snapshot: req.snapshot || undefined, signal: deps.shutdown }))),
    ListSnapshots: unary('ListSnapshots', async (req) => {
      if (req.namespace) validateId('namespace', req.namespace);
      if (req.id) validateId('container id', req.id);
      return { snapshots: (await backend.list(req.namespace || undefined, req.id || undefined)).map(snapshot) };
    }),
    DeleteSnapshot: unary('DeleteSnapshot', async (req) => {
      if (!req.snapshot) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'the snapshot to delete is required (its id or a unique prefix)');
      return { snapshot: snapshot(await backend.delete(req.snapshot)) };
    }),
    MoveSnapshot: unary('MoveSnapshot', async (req) => {
      if (!req.snapshot) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'the snapshot to move is required (its id or a unique prefix)');
      if (!req.tier) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'the tier to move it to is required: ram, disk or s3');
      // A few progress events a second while it runs (the CLI draws its progress bar from them).
      let last = 0;
      const m = await backend.move(req.snapshot, req.tier, (s, done, total) => {
        const now = Date.now();
        if (now - last < PROGRESS_EVERY_MS && done < total) return;
        last = now;
        events.moveProgress(s.namespace, s.containerId, s.id, req.tier ?? '', done, total);
      });
      return { snapshot: snapshot(m.snapshot), bytesWritten: u64(m.bytesWritten), durationMs: m.durationMs };
    }),
    PinSnapshot: unary('PinSnapshot', async (req) => {
      if (!req.snapshot) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'the snapshot to pin is required (its id or a unique prefix)');
      return { snapshot: snapshot(await backend.pin(req.snapshot, req.tier ?? '')) };
    }),
    VerifySnapshot: unary('VerifySnapshot', async (req) => {
      if (!req.snapshot) throw new KybernateError('KYB_ERR_INVALID_ARGUMENT', 'the snapshot to verify is required (its id or a unique prefix)');
      const v = await backend.verify(req.snapshot);
      return { snapshot: snapshot(v.snapshot), verified: v.verified, bytesRead: u64(v.bytesRead), durationMs: v.durationMs };
    }),
    CollectGarbage: unary('CollectGarbage', async (req) => ({
      tiers: (await backend.collectGarbage((req.graceS || 3600) * 1000)).map((t) => ({
        tier: t.tier, deletedChunks: u64(t.deleted), freedBytes: u64(t.freedBytes), keptChunks: u64(t.kept),
      })),
    })),
    Gpus: unary('Gpus', async (_req, signal) => {
      const [inv, views] = await Promise.all([gpuInventory(), ctx.workloads.list('', { signal })]);
      return {
        gpus: inv.gpus.map((g) => ({ uuid: g.uuid, name: g.name, memoryTotalBytes: u64(g.memoryTotalBytes), memoryUsedBytes: u64(g.memoryUsedBytes) })),
        unavailable: inv.unavailable,
        workloads: views.filter((v) => v.gpuMemoryBytes > 0).map((v) => ({ namespace: v.namespace, id: v.id, gpuMemoryBytes: u64(v.gpuMemoryBytes) })),
      };
    }),
    Health: unary('Health', async (_req, signal) => {
      const uptimeS = (Date.now() - deps.startedAt) / 1000;
      try {
        const v = await ctx.containerd.version({ timeoutMs: HEALTH_TIMEOUT_MS, signal });
        const n = (await ctx.workloads.list('', { signal })).length;
        return { containerd: true, containerdVersion: v.version, workloads: n, uptimeS };
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'health: containerd does not answer');
        return { containerd: false, containerdVersion: '', workloads: 0, uptimeS };
      }
    }),
    Version: unary('Version', () => Promise.resolve({ version: VERSION, revision: REVISION })),
    Events: (call: grpc.ServerWritableStream<RequestOf<'Events'>, ResponseOf<'Events'>>) => {
      const namespace = call.request.namespace ?? '';
      try {
        if (namespace) validateId('namespace', namespace);
      } catch (err) {
        call.emit('error', fail(err));
        return;
      }
      let over = false;
      /** Ends the stream once: OK (the client cancelled, the agent stops) or with the error (too slow). */
      const finish = (err?: KybernateError): void => {
        if (over) return;
        over = true;
        unsubscribe();
        deps.shutdown.removeEventListener('abort', onShutdown);
        if (err) call.emit('error', fail(err));
        else call.end();
      };
      const onShutdown = (): void => finish();
      const unsubscribe = events.subscribe({
        namespace,
        send: (e) => {
          if (over) return;
          if (call.writableLength < MAX_EVENTS_BEHIND) {
            call.write(e);
            return;
          }
          log.warn({ namespace, behind: call.writableLength }, 'events client dropped: it does not keep up');
          finish(new KybernateError('KYB_ERR_RESOURCE_EXHAUSTED',
            `events client dropped: ${call.writableLength} events behind (it reads too slowly); reconnect and List to catch up`));
        },
      });
      call.on('cancelled', () => finish());
      deps.shutdown.addEventListener('abort', onShutdown, { once: true });
      // Headers now: a client that sees them knows it is subscribed, so nothing after that is missed.
      call.sendMetadata(new grpc.Metadata());
    },
  };
  return handlers as grpc.UntypedServiceImplementation;
}

function ids(req: { namespace?: string | null; id?: string | null }): { namespace: string; id: string } {
  const namespace = req.namespace ?? '';
  const id = req.id ?? '';
  validateId('namespace', namespace);
  validateId('container id', id);
  return { namespace, id };
}

function u64(n: number): Long {
  return Long.fromNumber(Math.max(0, Math.round(n)), true);
}

function snapshot(s: SnapshotInfo): kybernate.agent.v1.ISnapshot {
  return {
    id: s.id, namespace: s.namespace, containerId: s.containerId, path: s.path, createdAt: toTimestamp(s.createdAt),
    sizeBytes: u64(s.sizeBytes), gpuMemoryBytes: u64(s.gpuMemoryBytes), exited: s.exited,
    tiers: s.tiers ?? ['ram'], storedBytes: u64(s.storedBytes ?? s.sizeBytes), pinned: s.pinned ?? '',
  };
}
