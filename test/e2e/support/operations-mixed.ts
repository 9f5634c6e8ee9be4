// The mixed-operations run of operations.test.ts: a seeded schedule of operations on several CUDA
// containers at once, each container's operations sent in bursts that overlap, and a check that every
// container's history is linearisable: some one-at-a-time order of its operations, consistent with when
// each was sent and answered, explains every result (Wing & Gong's search over a small model).
import { expect } from 'vitest';
import type { MatrixContext } from './matrix';
import {
  BUSY_CODES, Code, checkpoint, cli, completeSnapshot, filesIn, freshDir, pause, pids, prng, releaseAll, resume, slow,
  startCuda, state, update, type OpResult,
} from './operations';
import { task } from './ctr';

export const KINDS = ['pause', 'resume', 'suspend', 'resume-gpu', 'checkpoint', 'update', 'state', 'pids'] as const;
export type Kind = (typeof KINDS)[number];
/**
 * How often each kind is drawn: the GPU operations most, so that most bursts race one against another
 * (a pause wins a race against a suspend, and then every suspend is refused until a resume).
 */
const WEIGHTS: Record<Kind, number> = { pause: 1, resume: 2, suspend: 3, 'resume-gpu': 2, checkpoint: 2, update: 1, state: 1, pids: 1 };
const DRAW: Kind[] = KINDS.flatMap((k) => Array<Kind>(WEIGHTS[k]).fill(k));

interface Done { kind: Kind; sent: number; answered: number; r: OpResult; note: string }
interface Model { paused: boolean; suspended: boolean }

/** A settled operation's bound: one that is not answered by then is reported as hung. */
const SETTLE_MS = 150_000;

/** The model state after `d` ran in `s`, or undefined when `d`'s result is impossible there. */
function step(s: Model, d: Done, pidsOf: number[]): Model | undefined {
  const { ok, code } = d.r;
  const refused = !ok && code === Code.FAILED_PRECONDITION;
  switch (d.kind) {
    case 'pause': return !s.paused ? (ok ? { paused: true, suspended: false } : undefined) : refused ? s : undefined;
    // Task.Resume of a suspended container resumes its GPU too.
    case 'resume': return s.paused ? (ok ? { paused: false, suspended: false } : undefined) : refused ? s : undefined;
    case 'suspend': return !s.paused && !s.suspended ? (ok ? { paused: true, suspended: true } : undefined) : refused ? s : undefined;
    case 'resume-gpu': return s.suspended ? (ok ? { paused: false, suspended: false } : undefined) : refused ? s : undefined;
    case 'checkpoint':
      if (ok) return d.note === `complete suspendedInPlace=${s.suspended}` ? s : undefined;
      return BUSY_CODES.includes(code) && d.note === 'empty' ? s : undefined;
    case 'update': return ok ? s : undefined;
    case 'state': return ok && d.r.value === (s.paused ? 'PAUSED' : 'RUNNING') ? s : undefined;
    case 'pids': return ok && JSON.stringify(d.r.value) === JSON.stringify(pidsOf) ? s : undefined;
  }
}

const key = (s: Model): string => `${+s.paused}${+s.suspended}`;

/** Every model state some linearisation of `h` ends in (empty: none explains the results). */
export function linearisations(h: Done[], pidsOf: number[]): Set<string> {
  const finals = new Set<string>();
  const seen = new Set<string>();
  const walk = (left: number[], s: Model): void => {
    const memo = `${left.join(',')}|${key(s)}`;
    if (seen.has(memo)) return;
    seen.add(memo);
    if (left.length === 0) { finals.add(key(s)); return; }
    // Only an operation sent before every other one left was answered can be next.
    const firstAnswer = Math.min(...left.map((i) => h[i]!.answered));
    for (const i of left) {
      if (h[i]!.sent > firstAnswer) continue;
      const next = step(s, h[i]!, pidsOf);
      if (next) walk(left.filter((j) => j !== i), next);
    }
  };
  walk(h.map((_, i) => i), { paused: false, suspended: false });
  return finals;
}

async function perform(ctx: MatrixContext, id: string, kind: Kind, n: number): Promise<{ r: OpResult; note: string }> {
  const { cd } = ctx;
  switch (kind) {
    case 'pause': return { r: await pause(cd, id), note: '' };
    case 'resume': return { r: await resume(cd, id), note: '' };
    case 'suspend': return { r: await cli(cd, 'suspend', id), note: '' };
    case 'resume-gpu': return { r: await cli(cd, 'resume', id), note: '' };
    case 'update': return { r: await update(cd, id, 512 + n), note: '' };
    case 'state': return { r: await state(cd, id), note: '' };
    case 'pids': return { r: await pids(cd, id), note: '' };
    case 'checkpoint': {
      const dir = freshDir(`mixed-${n}`);
      const r = await checkpoint(cd, id, dir);
      if (!r.ok) return { r, note: filesIn(dir).length === 0 ? 'empty' : `left ${filesIn(dir).join(' ')}` };
      try {
        return { r, note: `complete suspendedInPlace=${completeSnapshot(dir).options.suspendedInPlace === true}` };
      } catch (err) {
        return { r, note: `not complete: ${(err as Error).message}` };
      }
    }
  }
}

export interface MixedRun { ids: string[]; pids: number[][]; hung: string[]; illegal: string[]; schedule: Kind[][][] }

/**
 * `containers` CUDA containers, `perContainer` operations each, in bursts of 1-3 sent together; all
 * containers at once. The GPU steps are slowed (lock, restore) so that bursts overlap them.
 */
export async function mixedRun(ctx: MatrixContext, containers: number, perContainer: number, seed: number): Promise<MixedRun> {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const schedule: Kind[][][] = [];
  for (let c = 0; c < containers; c++) {
    const bursts: Kind[][] = [];
    for (let left = perContainer; left > 0;) {
      const size = Math.min(left, 2 + Math.floor(rand() * 2));
      bursts.push(Array.from({ length: size }, () => pick(DRAW)));
      left -= size;
    }
    schedule.push(bursts);
  }
  // The schedule is fixed by the seed; it must hold the races this test is for.
  const racing = schedule.flat().filter((b) => b.includes('suspend') && b.some((k) => k !== 'suspend' && k !== 'state' && k !== 'pids'));
  expect(racing.length, 'bursts racing a suspend against another operation').toBeGreaterThanOrEqual(10);

  const ids = schedule.map((_, c) => ctx.id(`mixed${c}`));
  const pidsOf: number[][] = [];
  for (const id of ids) pidsOf.push(await startCuda(ctx.cd, ctx.rt.runtime, id));
  const hung: string[] = [];
  const illegal: string[] = [];
  slow('lock', 800);
  slow('checkpoint', 400);
  slow('restore', 400);
  let serial = 0;
  try {
    await Promise.all(schedule.map(async (bursts, c) => {
      const history: Done[] = [];
      const sendOne = async (kind: Kind): Promise<void> => {
        const n = ++serial;
        const sent = performance.now();
        let timer: NodeJS.Timeout | undefined;
        const bound = new Promise<'hung'>((r) => { timer = setTimeout(() => r('hung'), SETTLE_MS); });
        const out = await Promise.race([perform(ctx, ids[c]!, kind, n), bound]);
        clearTimeout(timer);
        if (out === 'hung') { hung.push(`${ids[c]}: ${kind} #${n}`); return; }
        history.push({ kind, sent, answered: performance.now(), r: out.r, note: out.note });
      };
      // A burst's operations are sent together; the slowed GPU steps keep them overlapping.
      for (const burst of bursts) await Promise.all(burst.map(sendOne));
      const finals = linearisations(history, pidsOf[c]!);
      const describe = () => history.map((d) => `${d.kind}=${d.r.ok ? 'ok' : d.r.code}${d.note ? ` (${d.note})` : ''}${d.r.ok ? '' : ` ${d.r.message}`}`).join('; ');
      if (finals.size === 0) { illegal.push(`${ids[c]}: ${describe()}`); return; }
      const t = await task(ctx.cd, ids[c]!);
      const st = await cli(ctx.cd, 'gpu-status', ids[c]!);
      const now = `${+(t?.status === 'PAUSED')}${+((st.value as { suspended?: boolean } | undefined)?.suspended === true)}`;
      if (!finals.has(now)) illegal.push(`${ids[c]}: ends paused/suspended=${now}, the results allow ${[...finals].join(' or ')}: ${describe()}`);
    }));
  } finally {
    releaseAll();
  }
  return { ids, pids: pidsOf, hung, illegal, schedule };
}
