// The activator put together: the agent's client, upstream pools, gates behind a router, the front (HTTP/1.1
// and h2c), the admin socket, metrics, and the reload of routes when the config file changes or on SIGHUP.
import fs from 'node:fs';
import type http from 'node:http';
import type { Logger } from 'pino';
import { AgentClient } from '../agent-api/client';
import type { ActivatorStatus } from '../activator-api/status';
import { formatHostPort } from '../hostport';
import { serveMetrics } from '../metrics-http';
import { VERSION } from '../version';
import { listenAdmin } from './admin';
import { reloadRoutes, type ActivatorConfig } from './config';
import { listenFront } from './listener';
import { ActivatorMetrics } from './metrics';
import { UpstreamPools } from './pools';
import { probeUntilReady } from './probe';
import { Router } from './router';
import { agentWorkloads } from './workload-agent';

/** How often the config file's mtime is looked at (fs.watchFile: survives editors that replace the file). */
const WATCH_INTERVAL_MS = 500;
const INITIAL_REFRESH_MS = 2_000;

export interface RunningActivator {
  listen: string;
  admin: string;
  metrics?: string;
  /** Reads the routes again (what SIGHUP does). */
  reload(): void;
  close(): Promise<void>;
}

export async function startActivator(cfg: ActivatorConfig, log: Logger): Promise<RunningActivator> {
  const startedAt = Date.now();
  const agent = new AgentClient({ address: cfg.agent });
  const pools = new UpstreamPools();
  const metrics = new ActivatorMetrics();
  const router = new Router(pools, metrics, {
    agent: agentWorkloads(agent),
    drain: (upstream) => pools.drain(upstream),
    probe: probeUntilReady,
    metrics,
    log,
  });
  router.setRoutes(cfg.routes);
  // The workloads' states before the first request, if the agent answers soon; otherwise the first request asks.
  await Promise.race([router.refreshAll(), new Promise((r) => setTimeout(r, INITIAL_REFRESH_MS).unref())]);
  const cleanup: Array<() => Promise<void> | void> = [() => router.close(), () => pools.close(), () => agent.close()];
  const undo = async (): Promise<void> => {
    for (const f of cleanup.reverse()) await f();
  };
  try {
    const front = await listenFront(cfg.listen.host, cfg.listen.port, router);
    cleanup.push(() => front.close());
    const status = (): ActivatorStatus => ({
      version: VERSION, listen: front.address, agent: cfg.agent, uptimeS: (Date.now() - startedAt) / 1000,
      routes: router.gatesInOrder().map((g) => g.status()),
    });
    const admin = await listenAdmin(cfg.admin, status);
    cleanup.push(() => admin.close());
    let metricsAddress: string | undefined;
    if (cfg.metrics) {
      let server: http.Server;
      try {
        ({ server, address: metricsAddress } = await serveMetrics(metrics.registry, cfg.metrics.host, cfg.metrics.port));
      } catch (err) {
        throw new Error(`cannot serve metrics on ${formatHostPort(cfg.metrics)} (--metrics): ${(err as Error).message}`, { cause: err });
      }
      cleanup.push(() => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }));
    }
    const reload = (): void => {
      if (cfg.configFile === undefined) return;
      try {
        const changes = router.setRoutes(reloadRoutes(cfg.configFile));
        log.info({ config: cfg.configFile, ...changes }, 'routes reloaded');
      } catch (err) {
        log.error({ err: (err as Error).message }, 'routes not reloaded: the config file is wrong; the routes stay as they were');
      }
    };
    if (cfg.configFile !== undefined) {
      const file = cfg.configFile;
      fs.watchFile(file, { interval: WATCH_INTERVAL_MS, persistent: false }, (cur, prev) => {
        if (cur.mtimeMs !== prev.mtimeMs || cur.ino !== prev.ino) reload();
      });
      cleanup.push(() => fs.unwatchFile(file));
    }
    log.info({
      listen: front.address, admin: admin.socket, metrics: metricsAddress, agent: cfg.agent, config: cfg.configFile,
      routes: cfg.routes.map((r) => r.name),
    }, 'listening');
    let closing: Promise<void> | undefined;
    return { listen: front.address, admin: admin.socket, metrics: metricsAddress, reload, close: () => (closing ??= undo()) };
  } catch (err) {
    await undo();
    throw err;
  }
}
