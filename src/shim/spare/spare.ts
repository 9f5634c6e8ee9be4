// A warm spare shim daemon. Booted ahead of time (launch.ts), it loads everything a group daemon needs
// and waits on the node's spare socket. The native front (native/front) sends it the `start` or `delete`
// that containerd gave the front; the spare answers what the Node one-shot would have printed:
//   - delete, and a start whose group daemon already serves: answered, the spare stays a spare;
//   - a start that needs a new daemon: the spare claims it and becomes that group's daemon (claim.ts),
//     then boots the next spare. Only one start can claim it; later ones are told to fall back.
// A spare that finds its bundle replaced on disk (a new build), its socket taken over, or its containerd
// gone exits: it is never claimed by a front of another build, and is replaced by the next slow start.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { warmToolVersions } from '../../host/facts';
import { canConnect, withSocketLock } from '../../socket-lock';
import { listen, sameUser } from '../daemon-socket';
import { parseFlags } from '../flags';
import { finishStart, planStart } from '../manager/start';
import { trace } from '../trace';
import { ClaimFailed, claim, type ClaimResult } from './claim';
import { buildId, clearMarker, environmentMismatch, spareDir, spareSocket } from './launch';
import {
  ANSWER_DONE, ANSWER_FALL_BACK, FrameError, MAX_FRAME, type SpareAnswer, type SpareRequest, decodeRequest, encodeAnswer,
} from './protocol';

/** How often an idle spare checks that it is still current (KYBERNATE_SHIM_SPARE_CHECK_MS for tests). */
const STALE_CHECK_MS = Number(process.env.KYBERNATE_SHIM_SPARE_CHECK_MS) || 10_000;
const REQUEST_TIMEOUT_MS = 5_000;

function envObject(list: string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return env;
}

const done = (stdout: Buffer, exitCode = 0, stderr = ''): SpareAnswer =>
  ({ kind: ANSWER_DONE, exitCode, stdout, stderr: Buffer.from(stderr) });
const fallBack = (reason: string): SpareAnswer => ({ kind: ANSWER_FALL_BACK, reason });

class Spare {
  private claimed = false;
  private readonly server: net.Server;
  private ino = 0;
  /** The environment this process was exec'd with (a claim replaces process.env). */
  private readonly bootEnv: NodeJS.ProcessEnv = { ...process.env };

  constructor(private readonly build: string, private readonly sock: string) {
    this.server = net.createServer((c) => { if (sameUser(c)) this.accept(c); else c.destroy(); });
  }

  /** Binds the spare socket; false when another spare already serves it. */
  async bind(): Promise<boolean> {
    fs.mkdirSync(path.dirname(this.sock), { recursive: true, mode: 0o700 });
    return withSocketLock(`${this.sock}.lock`, async () => {
      if (await canConnect(this.sock)) return false;
      // Bound under a private name and renamed into place: the path never lacks a socket for a front
      // that connects meanwhile, and libuv's unlink-on-close hits the private name, never a successor's.
      const tmp = path.join(path.dirname(this.sock), `.${this.build}.${process.pid}.sock`);
      fs.rmSync(tmp, { force: true });
      await listen(this.server, tmp);
      fs.renameSync(tmp, this.sock);
      this.ino = fs.statSync(this.sock).ino;
      return true;
    });
  }

  /** True while this process is still the current build's spare. */
  private current(script: string, scriptIno: number): boolean {
    const sockIno = fs.statSync(this.sock, { throwIfNoEntry: false })?.ino;
    const scriptNow = fs.statSync(script, { throwIfNoEntry: false })?.ino;
    return sockIno === this.ino && scriptNow === scriptIno;
  }

  /** Stops serving and removes the spare socket if it is still ours. */
  private retire(): void {
    this.claimed = true;
    if (fs.statSync(this.sock, { throwIfNoEntry: false })?.ino === this.ino) fs.rmSync(this.sock, { force: true });
    this.server.close();
  }

  /**
   * Exits once this spare can no longer be claimed: its bundle was replaced (a rebuild), its socket taken
   * over, or the containerd it was booted for is gone (its ttrpc socket answers no more; containerd gives
   * every shim TTRPC_ADDRESS). A later slow start boots a fresh one.
   */
  watchStaleness(): void {
    const script = process.argv[1]!;
    const scriptIno = fs.statSync(script).ino;
    const ttrpc = this.bootEnv.TTRPC_ADDRESS?.replace(/^unix:\/\//, '');
    const timer = setInterval(() => {
      void (async () => {
        if (this.claimed) { clearInterval(timer); return; }
        const stale = !this.current(script, scriptIno) || (ttrpc !== undefined && !(await canConnect(ttrpc)));
        if (stale && !this.claimed) {
          this.retire();
          process.exit(0);
        }
      })();
    }, STALE_CHECK_MS);
  }

  private accept(c: net.Socket): void {
    let buf = Buffer.alloc(0);
    let handled = false;
    c.setTimeout(REQUEST_TIMEOUT_MS, () => c.destroy());
    c.on('error', () => c.destroy());
    c.on('data', (chunk: Buffer) => {
      if (handled) return;
      buf = Buffer.concat([buf, chunk]);
      if (buf.length > MAX_FRAME) { c.destroy(); return; }
      let req: SpareRequest;
      try {
        req = decodeRequest(buf);
      } catch (err) {
        if (!(err instanceof FrameError && err.incomplete)) c.destroy();
        return;
      }
      handled = true;
      c.setTimeout(0);
      void this.handle(req).then((answer) => c.end(encodeAnswer(answer.answer), () => answer.after?.()));
    });
  }

  private async handle(req: SpareRequest): Promise<{ answer: SpareAnswer; after?: () => void }> {
    const t0 = performance.now();
    const flags = parseFlags(req.argv);
    let ev = flags.action;
    try {
      if (req.build !== this.build) {
        // Not where a spare of this build belongs: free the path (the next slow start boots the right one).
        this.retire();
        return { answer: fallBack(`spare of build ${this.build}, front of ${req.build}`), after: () => process.exit(0) };
      }
      // A claimed spare is a daemon whose native reaper collects every child: the one-shot delete's
      // child_process runc would never see its exit there.
      if (flags.action === 'delete' && this.claimed) return { answer: fallBack('this spare was claimed') };
      if (flags.action === 'delete') {
        const env = envObject(req.env);
        const { deleteOutput } = await import('../manager/delete');
        const { runcEnv } = await import('../runc');
        return { answer: done(await deleteOutput(flags, req.cwd, runcEnv(env))) };
      }
      if (flags.action !== 'start' || flags.version || flags.info) return { answer: fallBack(`action ${JSON.stringify(flags.action)}`) };
      const plan = await planStart(flags, req.cwd, req.stdin);
      if (await canConnect(plan.sock)) return { answer: done(await finishStart(plan, req.cwd)) };
      if (this.claimed) return { answer: fallBack('this spare was claimed by another start') };
      const mismatch = environmentMismatch(this.bootEnv, envObject(req.env));
      if (mismatch) return { answer: fallBack(mismatch) };
      // Synchronously, before any await: a concurrent start of another group sees the claim.
      this.claimed = true;
      ev = 'claim';
      const result: ClaimResult = await claim(flags, req, plan, envObject(req.env), () => this.server.close());
      if (!result.claimed) this.claimed = false;
      return { answer: done(await finishStart(plan, req.cwd)), after: result.after };
    } catch (err) {
      const message = `containerd-shim-kybernate-v2: ${err instanceof Error ? err.message : String(err)}\n`;
      return { answer: done(Buffer.alloc(0), 1, message), ...(err instanceof ClaimFailed ? { after: () => process.exit(1) } : {}) };
    } finally {
      trace('spare', ev, flags.id, performance.now() - t0);
    }
  }
}

export async function runSpare(): Promise<void> {
  const build = buildId();
  if (!build) throw new Error('this build has no native front: it has no use for a spare');
  fs.mkdirSync(spareDir(), { recursive: true, mode: 0o700 });
  // Everything a group daemon needs, loaded now: a claim only wires it up.
  await Promise.all([import('../server'), import('../manager/delete'), import('../../gen/actions'), import('../options')]);
  const spare = new Spare(build, spareSocket());
  const bound = await spare.bind().finally(() => clearMarker());
  if (!bound) process.exit(0);
  spare.watchStaleness();
  process.chdir('/');
  // A restore's Create checks the images against criu's and runc's versions: probed now, not then.
  warmToolVersions();
}
