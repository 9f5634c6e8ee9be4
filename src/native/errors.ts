// NativeError: what every failed addon call throws or rejects with. The addon tags a plain Error with
// { code, errno, op, path?, pid? }; the wrappers in index.ts rebuild it as a NativeError whose stack
// is the caller's (for Promise calls the Error is created before the native call is made).

/** A failed native call: `code` is the errno name ('ENOENT', 'ETIMEDOUT', …) or 'KYB_ERR_NATIVE'. */
export class NativeError extends Error {
  readonly code: string;
  /** Linux errno (positive), 0 for failures without one. */
  readonly errno: number;
  /** The addon function that failed: 'spawn', 'mount', 'receiveFd', … */
  readonly op: string;
  readonly path?: string;
  readonly pid?: number;

  constructor(message: string, info: { code: string; errno: number; op: string; path?: string; pid?: number }) {
    super(message);
    this.name = 'NativeError';
    this.code = info.code;
    this.errno = info.errno;
    this.op = info.op;
    if (info.path !== undefined) this.path = info.path;
    if (info.pid !== undefined) this.pid = info.pid;
  }

  /**
   * Converts what the addon threw. Non-native errors (TypeError for bad arguments, …) pass through.
   * With `site` (an Error made at the call site) the result carries that stack.
   */
  static from(err: unknown, site?: Error): unknown {
    if (!(err instanceof Error) || err instanceof NativeError) return err;
    const tagged = err as Error & { code?: unknown; errno?: unknown; op?: unknown; path?: unknown; pid?: unknown };
    if (typeof tagged.code !== 'string' || typeof tagged.op !== 'string') return err;
    const out = new NativeError(err.message, {
      code: tagged.code,
      errno: typeof tagged.errno === 'number' ? tagged.errno : 0,
      op: tagged.op,
      path: typeof tagged.path === 'string' ? tagged.path : undefined,
      pid: typeof tagged.pid === 'number' ? tagged.pid : undefined,
    });
    if (site?.stack !== undefined) {
      const frames = site.stack.split('\n').slice(1).join('\n');
      out.stack = `${out.name}: ${out.message}\n${frames}`;
    }
    return out;
  }
}
