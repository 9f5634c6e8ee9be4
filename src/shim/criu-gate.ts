// The CRIU gate: a CRIU action script that stops a dump or a restore at the one stage where CRIU still
// holds every process of the container and still obeys a failing script, until the shim gives its
// verdict.
//
// - post-restore: every process is restored but none has executed an instruction of the image, and a
//   failing script makes CRIU kill them all ("Aborting restore due to post-restore script"). The shim
//   verifies the images' checksums meanwhile; anything but "ok" aborts, so code from a corrupt image
//   never runs. (pre-resume, used before, is too late: CRIU logs a failing pre-resume script and
//   resumes the tasks anyway.)
// - post-dump: every image file is written and closed, the processes are still seized and their network
//   locked, and a failing script makes CRIU resume them instead of killing them (--exit) or letting them
//   go (--leave-running). The shim writes the manifest (every file's checksum, fsync'd) meanwhile; so an
//   --exit checkpoint kills the processes only once the snapshot is complete and durable, and any
//   failure before that leaves them running.
//
// runc passes CRIU the configuration file named by the spec's `org.criu.config` annotation: runc restore
// reads it from config.json, runc checkpoint from the labels the container was created with. So the
// annotation is put into config.json before every `runc create` and `runc restore`, pointing at
// <bundle>/criu-gate/criu.conf; that file exists only while a stage is armed (CRIU ignores a missing
// configuration file), so every other dump and restore runs exactly as without the gate. A
// configuration the container asked for itself is remembered and its lines come first.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const CRIU_CONFIG_ANNOTATION = 'org.criu.config';

export type GateStage = 'post-dump' | 'post-restore';

// Constant text: the script finds its files next to itself ($0), so no path is ever spliced into it.
const GATE_SCRIPT = `#!/bin/sh
# kybernate CRIU gate (see src/shim/criu-gate.ts)
case "$CRTOOLS_SCRIPT_ACTION" in post-dump|post-restore) ;; *) exit 0 ;; esac
d=$(dirname "$0")
s=$CRTOOLS_SCRIPT_ACTION
[ -f "$d/armed-$s" ] || exit 0
shim=$(cat "$d/armed-$s")
: > "$d/reached-$s"
while [ ! -f "$d/verdict-$s" ]; do
  # A shim that died gives no verdict: fail the stage (dump: processes resumed; restore: killed).
  kill -0 "$shim" 2>/dev/null || exit 1
  sleep 0.005
done
[ "$(cat "$d/verdict-$s")" = ok ]
`;

/** CRIU's configuration syntax has no quoting: a path it cannot carry disables the gate. */
const SAFE_PATH = /^\/[A-Za-z0-9_./@:+-]+$/;
const DIR_NAME = 'criu-gate';
const INHERITED = 'inherited';

function writeAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.kybernate-tmp`;
  fs.writeFileSync(tmp, text, { mode });
  fs.renameSync(tmp, file);
}

export class CriuGate {
  private constructor(readonly dir: string) {}

  private get conf(): string { return path.join(this.dir, 'criu.conf'); }

  /**
   * Points the bundle's spec at the gate's configuration (before `runc create` or `runc restore`).
   * Returns undefined, leaving the spec alone, when the bundle's path cannot be written in CRIU's
   * configuration.
   */
  static prepare(bundle: string): CriuGate | undefined {
    const dir = path.join(bundle, DIR_NAME);
    if (!SAFE_PATH.test(dir)) return undefined;
    const gate = new CriuGate(dir);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(dir, 'gate.sh'), GATE_SCRIPT, { mode: 0o700 });
    const specFile = path.join(bundle, 'config.json');
    const spec = JSON.parse(fs.readFileSync(specFile, 'utf8')) as { annotations?: Record<string, string> };
    const previous = spec.annotations?.[CRIU_CONFIG_ANNOTATION];
    if (previous !== gate.conf) {
      if (previous) fs.writeFileSync(path.join(dir, INHERITED), previous, { mode: 0o600 });
      else fs.rmSync(path.join(dir, INHERITED), { force: true });
      spec.annotations = { ...spec.annotations, [CRIU_CONFIG_ANNOTATION]: gate.conf };
      writeAtomic(specFile, JSON.stringify(spec), 0o644);
    }
    gate.disarm();
    return gate;
  }

  /**
   * The gate of a container created with one (`annotations`, its spec's, point at it and the script is
   * there); undefined otherwise.
   */
  static of(bundle: string, annotations: Record<string, string>): CriuGate | undefined {
    const dir = path.join(bundle, DIR_NAME);
    if (annotations[CRIU_CONFIG_ANNOTATION] !== path.join(dir, 'criu.conf')) return undefined;
    try {
      if (!fs.statSync(path.join(dir, 'gate.sh')).isFile()) return undefined;
    } catch {
      return undefined;
    }
    return new CriuGate(dir);
  }

  /** The lines of the configuration the container's own annotation named, if any. */
  private inherited(): string {
    try {
      const text = fs.readFileSync(fs.readFileSync(path.join(this.dir, INHERITED), 'utf8'), 'utf8');
      return text && !text.endsWith('\n') ? `${text}\n` : text;
    } catch {
      return ''; // none, or runc would not have found it either
    }
  }

  /** The next dump or restore stops at `stage` until open(). */
  arm(stage: GateStage): void {
    for (const f of [`reached-${stage}`, `verdict-${stage}`]) fs.rmSync(path.join(this.dir, f), { force: true });
    fs.writeFileSync(path.join(this.dir, `armed-${stage}`), String(process.pid), { mode: 0o600 });
    writeAtomic(this.conf, `${this.inherited()}action-script ${path.join(this.dir, 'gate.sh')}\n`, 0o600);
  }

  /** Back to the container's own CRIU configuration (or none): later dumps and restores run ungated. */
  disarm(): void {
    const inherited = this.inherited();
    if (inherited) writeAtomic(this.conf, inherited, 0o600);
    else fs.rmSync(this.conf, { force: true });
    for (const f of fs.readdirSync(this.dir)) {
      if (/^(armed|reached|verdict)-/.test(f)) fs.rmSync(path.join(this.dir, f), { force: true });
    }
  }

  /** Lets CRIU go on ("ok") or makes the stage fail (restore: processes killed; dump: processes resumed). */
  open(stage: GateStage, ok: boolean): void {
    writeAtomic(path.join(this.dir, `verdict-${stage}`), ok ? 'ok\n' : 'refused\n', 0o600);
  }

  /** Whether CRIU reached `stage` and runs the script now (or did). */
  reached(stage: GateStage): boolean {
    return fs.existsSync(path.join(this.dir, `reached-${stage}`));
  }

  /**
   * Resolves true once CRIU reached `stage`, false if `done` settles first (the operation failed before
   * it, or ran without the gate).
   */
  async waitReached(stage: GateStage, done: Promise<unknown>): Promise<boolean> {
    let settled = false;
    const mark = () => { settled = true; };
    done.then(mark, mark);
    for (;;) {
      if (this.reached(stage)) return true;
      if (settled) return this.reached(stage);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}
