// The agent's hierarchical storage management: the policy (storage/policy.ts, pure) evaluated over the
// snapshots as the tiers hold them, and its actions carried out through SnapshotTiers, one at a time, round
// after round until the plan is empty. It runs after every checkpoint, restore and move, and every
// INTERVAL_MS; only on agents whose config file has a "storage" key (without one, nothing is ever moved or
// deleted on its own, as before tiers existed).
//
// Invariants:
// - Every action goes through SnapshotTiers, which writes a new copy completely before it releases the old
//   one: a crash in the middle of a round leaves every snapshot with at least one complete copy.
// - Pins and last uses survive a restart: they live in one small JSON file beside the snapshots, replaced
//   atomically (written whole, synced, renamed).
// - A snapshot being moved or restored is busy: the policy leaves it alone that round.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from 'pino';
import { KybernateError } from '../errors';
import { evaluate, type Action, type PolicyConfig, type SnapshotFacts, type TierName } from '../storage/policy';
import type { SnapshotTiers } from './tiers';

const INTERVAL_MS = 30_000;
/** More rounds than this in one run means a bug in the policy (P10: it converges within copies × tiers). */
const MAX_ROUNDS = 100;
const STATE_FILE = '.kybernate-hsm.json';

interface State { pins: Record<string, TierName>; lastUsed: Record<string, number> }

export class Hsm {
  private state: State = { pins: {}, lastUsed: {} };
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<Action[]> | undefined;
  private again = false;
  private readonly file: string;

  constructor(private readonly tiers: SnapshotTiers, private readonly policy: PolicyConfig, dir: string, private readonly log: Logger,
    private readonly now: () => number = Date.now) {
    this.file = path.join(dir, STATE_FILE);
  }

  /** Reads the pins and last uses; starts the periodic runs. */
  start(): void {
    try {
      const s = JSON.parse(fs.readFileSync(this.file, 'utf8')) as Partial<State>;
      this.state = { pins: s.pins ?? {}, lastUsed: s.lastUsed ?? {} };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err: (err as Error).message, file: this.file }, 'hsm: state unreadable, starting without pins');
    }
    this.timer = setInterval(() => this.kick(), INTERVAL_MS);
    this.timer.unref();
    this.kick();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** A restore or prefetch used the snapshot now (it ages from here). */
  touch(id: string): void {
    this.state.lastUsed[id] = this.now();
    this.save();
  }

  /** Pins the snapshot's copy in `tier` (it never leaves it, the snapshot is never deleted); undefined unpins. */
  async pin(ref: string, tier: TierName | undefined): Promise<void> {
    const s = await this.tiers.find(ref);
    if (tier === undefined) delete this.state.pins[s.id];
    else {
      if (!(s.tiers ?? []).includes(tier)) throw new KybernateError('KYB_ERR_FAILED_PRECONDITION', `snapshot ${s.id} has no copy in ${tier}: move it there first (snapshots mv)`);
      this.state.pins[s.id] = tier;
    }
    this.save();
  }

  pinned(id: string): TierName | undefined {
    return this.state.pins[id];
  }

  /** Runs the policy now (or once more after the run in progress); resolves with what it did. */
  kick(): Promise<Action[]> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.run().catch((err: Error) => {
      this.log.warn({ err: err.message }, 'hsm: a round failed; the next one tries again');
      return [];
    }).finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        void this.kick();
      }
    });
    return this.running;
  }

  private async run(): Promise<Action[]> {
    const done: Action[] = [];
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const facts = await this.facts();
      const { actions, pressure } = evaluate(facts, this.policy, this.now());
      for (const p of pressure) this.log.warn(p, 'hsm: a tier is over its capacity and nothing in it can leave');
      if (actions.length === 0) return done;
      for (const a of actions) {
        await this.apply(a);
        done.push(a);
        this.log.info({ action: a }, 'hsm');
      }
    }
    throw new KybernateError('KYB_ERR_INTERNAL', `hsm: the policy did not converge in ${MAX_ROUNDS} rounds`);
  }

  private async apply(a: Action): Promise<void> {
    if (a.kind === 'delete') {
      await this.tiers.delete(a.id);
      delete this.state.pins[a.id];
      delete this.state.lastUsed[a.id];
      this.save();
    } else if (a.kind === 'demote') {
      await this.tiers.moveCopy(a.id, a.from, a.to);
    } else {
      await this.tiers.dropCopy(a.id, a.tier);
    }
  }

  private async facts(): Promise<SnapshotFacts[]> {
    const configured = new Set(this.policy.tiers.map((t) => t.name));
    return (await this.tiers.list()).map((s) => ({
      id: s.id, namespace: s.namespace, containerId: s.containerId, sizeBytes: s.sizeBytes, createdAt: s.createdAt.getTime(),
      lastUsedAt: this.state.lastUsed[s.id] ?? s.createdAt.getTime(),
      tiers: ((s.tiers ?? ['ram']) as TierName[]).filter((t) => configured.has(t)),
      pinned: this.state.pins[s.id], busy: this.tiers.isBusy(s.id),
    }));
  }

  private save(): void {
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      const fd = fs.openSync(tmp, 'w', 0o600);
      try {
        fs.writeSync(fd, `${JSON.stringify(this.state)}\n`);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, this.file);
    } catch (err) {
      this.log.warn({ err: (err as Error).message, file: this.file }, 'hsm: cannot save pins and last uses');
      fs.rmSync(tmp, { force: true });
    }
  }
}
