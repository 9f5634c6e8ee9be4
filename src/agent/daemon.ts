// The agent put together: containerd client, view, events, operation queue, metrics, and the gRPC server.
// Listening comes first, so a second agent on the same socket stops before it subscribes to anything.
import fs from 'node:fs';
import type http from 'node:http';
import type { Logger } from 'pino';
import { ContainerdClient } from '../containerd/client';
import type { ChunkStore } from '../storage/chunk-store';
import { toPolicy, type StorageConfig } from '../storage/config';
import { DiskChunkStore } from '../storage/disk-store';
import { S3ChunkStore } from '../storage/s3-store';
import { ShimClient } from '../shim-client/client';
import type { AgentConfig } from './config';
import { formatHostPort } from '../hostport';
import { serveMetrics } from '../metrics-http';
import type { AgentContext } from './context';
import { AgentEvents } from './events';
import { GpuMemory } from './gpus';
import { AgentMetrics } from './metrics';
import { Operations } from './operations';
import { listen } from './server';
import { deleteUnstartedRestores } from './recover';
import { agentHandlers, snapshotBackend } from './service';
import { Workloads } from './workloads';

export interface RunningAgent {
  socket: string;
  tcp?: string;
  metrics?: string;
  /** Stops serving (calls in flight get a grace period), ends event streams, closes containerd's client. */
  close(): Promise<void>;
}

export async function startAgent(cfg: AgentConfig, log: Logger): Promise<RunningAgent> {
  const startedAt = Date.now();
  const shutdown = new AbortController();
  const tcp = cfg.tcp && {
    address: formatHostPort(cfg.tcp), ca: readPem('tls-ca', cfg.tcp.ca), cert: readPem('tls-cert', cfg.tcp.cert), key: readPem('tls-key', cfg.tcp.key),
  };
  const containerd = new ContainerdClient({ address: cfg.containerdAddress });
  const metrics = new AgentMetrics();
  const stores = await openStores(cfg.storage);
  const backend = snapshotBackend(cfg.snapshotDir, stores, cfg.storageConfigured ? { config: toPolicy(cfg.storage), log } : undefined);
  await backend.load((msg) => log.warn(msg)).catch((err: Error) => log.warn({ err: err.message }, 'cannot list the chunk tiers\' snapshots'));
  for (const w of cfg.storage.warnings) log.warn(w);
  const workloads = new Workloads({ containerd, containerdState: cfg.containerdState, snapshots: backend.index, gpuMemory: new GpuMemory(), log });
  const events = new AgentEvents({ containerd, workloads, log });
  const operations = new Operations({
    started: (kind, namespace, id) => log.info({ kind, namespace, id }, 'operation started'),
    done: (kind, namespace, id, o) => {
      metrics.operationDone(kind, o.ok ? 'ok' : o.code ?? 'KYB_ERR_INTERNAL', o.durationMs / 1000);
      events.operationDone(kind, namespace, id, o);
      log.info({ kind, namespace, id, ok: o.ok, code: o.code, err: o.message, ms: Math.round(o.durationMs) }, 'operation done');
    },
  });
  const ctx: AgentContext = {
    containerd, containerdState: cfg.containerdState, snapshotDir: cfg.snapshotDir, log, snapshots: backend.index, workloads, events, metrics,
  };
  const handlers = agentHandlers({ ctx, operations, events, backend, shutdown: shutdown.signal, startedAt }, log);

  let server;
  try {
    server = await listen({ socket: cfg.socket, tcp }, handlers);
  } catch (err) {
    containerd.close();
    throw err;
  }
  let metricsServer: http.Server | undefined;
  let metricsAddress: string | undefined;
  if (cfg.metrics) {
    try {
      ({ server: metricsServer, address: metricsAddress } = await serveMetrics(metrics.registry, cfg.metrics.host, cfg.metrics.port));
    } catch (err) {
      await server.close();
      containerd.close();
      throw new Error(`cannot serve metrics on ${formatHostPort(cfg.metrics)} (--metrics): ${(err as Error).message}`, { cause: err });
    }
  }
  // Before the agent says it listens, a restore the last agent cut between Create and Start is undone.
  await deleteUnstartedRestores(containerd, log).catch((err: Error) => log.warn({ err: err.message }, 'cannot look for cut restores'));
  events.start();
  backend.removeOrphans().then((removed) => {
    if (removed.length > 0) log.info({ removed }, 'removed what a killed agent left in the snapshot directory');
  }, (err: Error) => log.warn({ err: err.message }, 'cannot clean the snapshot directory'));
  log.info({
    socket: server.socket, tcp: server.tcp, metrics: metricsAddress, containerd: cfg.containerdAddress,
    containerdState: cfg.containerdState, snapshotDir: cfg.snapshotDir, config: cfg.configFile, logLevel: cfg.logLevel,
  }, 'listening');

  let closing: Promise<void> | undefined;
  return {
    socket: server.socket,
    tcp: server.tcp,
    metrics: metricsAddress,
    close: () => (closing ??= (async () => {
      shutdown.abort();
      events.close();
      await server.close();
      await new Promise<void>((r) => {
        if (!metricsServer) return r();
        metricsServer.close(() => r());
        metricsServer.closeAllConnections(); // a scraper's keep-alive connection would hold close() up
      });
      backend.close();
      await ShimClient.closeShared();
      (stores.s3 as S3ChunkStore | undefined)?.close();
      containerd.close();
    })()),
  };
}

function readPem(flag: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new Error(`--${flag} ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** The chunk stores of the configured tiers below ram. */
async function openStores(storage: StorageConfig): Promise<Partial<Record<'disk' | 's3', ChunkStore>>> {
  const stores: Partial<Record<'disk' | 's3', ChunkStore>> = {};
  if (storage.disk) stores.disk = await DiskChunkStore.open(storage.disk.dir);
  if (storage.s3) {
    const s3 = storage.s3;
    stores.s3 = new S3ChunkStore({
      endpoint: s3.endpoint, region: s3.region, bucket: s3.bucket, prefix: s3.prefix, forcePathStyle: s3.forcePathStyle,
      accessKeyId: s3.credentials.accessKeyId, secretAccessKey: s3.credentials.secretAccessKey, maxSockets: Math.max(8, s3.concurrency * 2),
    });
  }
  return stores;
}
