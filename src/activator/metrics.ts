// The activator's Prometheus metrics (prom-client, own registry); src/metrics-http.ts serves them.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { GateState } from '../activator-api/status';

const PREFIX = 'kybernate_activator_';
const STATES: GateState[] = ['unknown', 'awake', 'draining', 'sleeping', 'asleep', 'waking', 'failed'];

export class ActivatorMetrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: `${PREFIX}requests_total`,
    help: 'Requests (and upgrades) by route and outcome: ok, upstream_error, timeout, client_aborted, queue_full, wait_timeout, wake_failed, failed, agent_unavailable, no_route',
    labelNames: ['route', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly heldGauge = new Gauge({
    name: `${PREFIX}held_requests`,
    help: 'Requests waiting for their workload to wake, by route',
    labelNames: ['route'] as const,
    registers: [this.registry],
  });
  private readonly wakeSeconds = new Histogram({
    name: `${PREFIX}wake_duration_seconds`,
    help: 'Wakes from the first held request to the probe passing, by route, what the workload woke from (suspend, checkpoint, running) and result',
    labelNames: ['route', 'from', 'result'] as const,
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  private readonly wakes = new Counter({
    name: `${PREFIX}wakes_total`,
    help: 'Wakes by route, what the workload woke from, and result (ok or the KYB_ERR_ code)',
    labelNames: ['route', 'from', 'result'] as const,
    registers: [this.registry],
  });
  private readonly sleeps = new Counter({
    name: `${PREFIX}sleeps_total`,
    help: 'Times an idle workload was put to sleep, by route, kind (suspend, checkpoint) and result',
    labelNames: ['route', 'kind', 'result'] as const,
    registers: [this.registry],
  });
  private readonly stateGauge = new Gauge({
    name: `${PREFIX}workload_state`,
    help: 'The gate state of each route\'s workload (1 for the current state); state="failed" means wakes kept failing',
    labelNames: ['route', 'state'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
  }

  request(route: string, outcome: string): void {
    this.requests.inc({ route, outcome });
  }

  held(route: string, n: number): void {
    this.heldGauge.set({ route }, n);
  }

  woke(route: string, from: string, result: string, seconds: number): void {
    this.wakes.inc({ route, from, result });
    this.wakeSeconds.observe({ route, from, result }, seconds);
  }

  slept(route: string, kind: string, result: string): void {
    this.sleeps.inc({ route, kind, result });
  }

  state(route: string, state: GateState): void {
    for (const s of STATES) this.stateGauge.set({ route, state: s }, s === state ? 1 : 0);
  }
}
