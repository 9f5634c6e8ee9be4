// The restore gate: CRIU restores the processes while the shim still verifies the images' checksums,
// and the processes resume only once every checksum matched. CRIU runs the action script named in the
// CRIU configuration file that runc passes it (the `org.criu.config` annotation) at each restore stage;
// at pre-resume the script waits for the shim's verdict, and anything but "ok" makes CRIU abort the
// restore and kill what it restored, so code from a corrupt image never runs.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const CRIU_CONFIG_ANNOTATION = 'org.criu.config';

// Constant text: the script finds its verdict next to itself ($0), so no path is ever spliced into it.
const GATE_SCRIPT = `#!/bin/sh
# kybernate restore gate (see src/shim/restore-gate.ts)
[ "$CRTOOLS_SCRIPT_ACTION" = "pre-resume" ] || exit 0
d=$(dirname "$0")
: > "$d/gate-reached"
while [ ! -f "$d/verdict" ]; do sleep 0.01; done
[ "$(cat "$d/verdict")" = ok ]
`;

/** CRIU's configuration syntax has no quoting: a path it cannot carry disables the gate. */
const SAFE_PATH = /^\/[A-Za-z0-9_./@:+-]+$/;

export class RestoreGate {
  private constructor(readonly dir: string) {}

  /**
   * Writes the script and CRIU configuration into `<workPath>/gate` and points the bundle's spec at it.
   * Returns undefined when the paths cannot be expressed in CRIU's configuration (the caller then waits
   * for the checksums before `runc restore` instead).
   */
  static install(workPath: string, bundle: string): RestoreGate | undefined {
    const dir = path.join(workPath, 'gate');
    if (!SAFE_PATH.test(dir)) return undefined;
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const script = path.join(dir, 'gate.sh');
    fs.writeFileSync(script, GATE_SCRIPT, { mode: 0o700 });
    const specFile = path.join(bundle, 'config.json');
    const spec = JSON.parse(fs.readFileSync(specFile, 'utf8')) as { annotations?: Record<string, string> };
    // A configuration the container asked for itself is kept: its lines come first.
    const previous = spec.annotations?.[CRIU_CONFIG_ANNOTATION];
    let inherited = '';
    if (previous && previous !== path.join(dir, 'criu.conf')) {
      try { inherited = fs.readFileSync(previous, 'utf8'); } catch { /* runc would not have found it either */ }
    }
    const conf = path.join(dir, 'criu.conf');
    fs.writeFileSync(conf, `${inherited}${inherited && !inherited.endsWith('\n') ? '\n' : ''}action-script ${script}\n`, { mode: 0o600 });
    spec.annotations = { ...spec.annotations, [CRIU_CONFIG_ANNOTATION]: conf };
    const tmp = `${specFile}.kybernate-tmp`;
    fs.writeFileSync(tmp, JSON.stringify(spec));
    fs.renameSync(tmp, specFile);
    return new RestoreGate(dir);
  }

  /** Lets the restored processes run ("ok") or makes CRIU abort the restore. */
  open(ok: boolean): void {
    const tmp = path.join(this.dir, 'verdict.tmp');
    fs.writeFileSync(tmp, ok ? 'ok\n' : 'refused\n');
    fs.renameSync(tmp, path.join(this.dir, 'verdict'));
  }

  /** Whether CRIU reached pre-resume and ran the script (i.e. runc passed our configuration on). */
  get reached(): boolean {
    return fs.existsSync(path.join(this.dir, 'gate-reached'));
  }
}
