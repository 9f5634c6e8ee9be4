// Human output shared by the commands: step tables, byte sizes, ages, column tables, a progress line.

export interface StepOut { step: string; pid: number; ms: number; /** Bytes the step moved, when it says. */ bytes?: number }

export function stepTable(steps: StepOut[]): string {
  const rows = steps.map((s) => `  ${s.step.padEnd(16)} ${(s.pid === 0 ? '-' : String(s.pid)).padStart(8)} ${s.ms.toFixed(1).padStart(10)} ms`);
  return [`  ${'STEP'.padEnd(16)} ${'PID'.padStart(8)} ${'TIME'.padStart(13)}`, ...rows].join('\n');
}

/** An agent step name (cuda-lock:1234) as the shim's step and pid. */
export function splitStep(name: string, ms: number): StepOut {
  const m = /^(.*):(\d+)$/.exec(name);
  return m ? { step: m[1]!, pid: Number(m[2]), ms } : { step: name, pid: 0, ms };
}

export const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 'es'}`;

/** A snapshot id (sha256:<64 hex>) as its first 12 hex digits, as the tables show it. */
export const shortSnapshot = (id: string): string => id.replace(/^sha256:/, '').slice(0, 12);

/** 629145600 → "600 MiB". */
export function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 || v >= 10 ? Math.round(v) : v.toFixed(1)} ${units[u]}`;
}

/** How long ago, in the largest whole unit: "12s", "5m", "3h", "2d". */
export function age(since: Date, now = Date.now()): string {
  const s = Math.max(0, Math.floor((now - since.getTime()) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** Rows under a header, columns padded to their widest cell. */
export function columns(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('   ').trimEnd();
  return `${[header, ...rows].map(line).join('\n')}\n`;
}

/**
 * On a terminal, a line on stderr that counts the seconds of an operation once it has taken longer than
 * one; stop() clears it. Nothing when stderr is not a terminal (scripts, --json).
 */
export function progressLine(label: string, enabled = process.stderr.isTTY === true): () => void {
  if (!enabled) return () => {};
  const t0 = Date.now();
  let shown = false;
  const timer = setInterval(() => {
    shown = true;
    process.stderr.write(`\r${label}… ${Math.floor((Date.now() - t0) / 1000)}s`);
  }, 1000);
  return () => {
    clearInterval(timer);
    if (shown) process.stderr.write('\r\x1b[K');
  };
}
