// The one table of Kybernate error codes. Every error that crosses a process or RPC boundary is a
// KybernateError with one of these codes; toStatus() is the only place a code becomes a gRPC status, and
// fromStatus() the only place a gRPC status from another server (containerd) becomes a code.

/** gRPC status codes (the numbering ttrpc and containerd use). */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

/** code → gRPC status. Add new codes here only; never reuse a retired one. */
export const ERROR_CODES = {
  KYB_ERR_INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
  KYB_ERR_NOT_FOUND: Status.NOT_FOUND,
  KYB_ERR_ALREADY_EXISTS: Status.ALREADY_EXISTS,
  KYB_ERR_FAILED_PRECONDITION: Status.FAILED_PRECONDITION,
  KYB_ERR_UNIMPLEMENTED: Status.UNIMPLEMENTED,
  KYB_ERR_UNAVAILABLE: Status.UNAVAILABLE,
  KYB_ERR_DEADLINE: Status.DEADLINE_EXCEEDED,
  KYB_ERR_CANCELLED: Status.CANCELLED,
  KYB_ERR_PERMISSION: Status.PERMISSION_DENIED,
  KYB_ERR_RESOURCE_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
  KYB_ERR_PROTOCOL: Status.INVALID_ARGUMENT,
  KYB_ERR_RUNTIME: Status.UNKNOWN,
  KYB_ERR_NATIVE: Status.INTERNAL,
  KYB_ERR_INTERNAL: Status.INTERNAL,
  // CUDA driver checkpoint API (raised by the addon, native/cuda*.cc)
  KYB_ERR_CUDA_NO_DRIVER: Status.FAILED_PRECONDITION,
  KYB_ERR_CUDA_DRIVER_TOO_OLD: Status.FAILED_PRECONDITION,
  KYB_ERR_CUDA_FROZEN: Status.FAILED_PRECONDITION,
  KYB_ERR_CUDA_HUNG: Status.DEADLINE_EXCEEDED,
  KYB_ERR_CUDA_INVALID: Status.INVALID_ARGUMENT,
  KYB_ERR_CUDA: Status.INTERNAL,
  // Checkpoints and restores (src/snapshot, src/shim/checkpoint.ts, src/shim/process/restore.ts)
  KYB_ERR_CHECKPOINT_INVALID: Status.DATA_LOSS,
  KYB_ERR_CHECKPOINT_INCOMPATIBLE: Status.FAILED_PRECONDITION,
  KYB_ERR_CHECKPOINT_FAILED: Status.INTERNAL,
  KYB_ERR_RESTORE_FAILED: Status.INTERNAL,
  KYB_ERR_GPU_SUSPENDED: Status.FAILED_PRECONDITION,
} as const satisfies Record<string, StatusCode>;
export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * gRPC status → code, for statuses that come back from another server (containerd's API): the inverse of
 * ERROR_CODES where that is one-to-one; a status without a code of its own gets the nearest one. By status
 * only, never by message text. OK and numbers outside the table give KYB_ERR_RUNTIME.
 */
const STATUS_CODES = {
  [Status.CANCELLED]: 'KYB_ERR_CANCELLED',
  // containerd's UNKNOWN is an error it could not classify, most often the runtime's (runc, a shim).
  [Status.UNKNOWN]: 'KYB_ERR_RUNTIME',
  [Status.INVALID_ARGUMENT]: 'KYB_ERR_INVALID_ARGUMENT',
  [Status.DEADLINE_EXCEEDED]: 'KYB_ERR_DEADLINE',
  [Status.NOT_FOUND]: 'KYB_ERR_NOT_FOUND',
  [Status.ALREADY_EXISTS]: 'KYB_ERR_ALREADY_EXISTS',
  [Status.PERMISSION_DENIED]: 'KYB_ERR_PERMISSION',
  [Status.RESOURCE_EXHAUSTED]: 'KYB_ERR_RESOURCE_EXHAUSTED',
  [Status.FAILED_PRECONDITION]: 'KYB_ERR_FAILED_PRECONDITION',
  // A concurrent change got there first: the state was not the one the call needed.
  [Status.ABORTED]: 'KYB_ERR_FAILED_PRECONDITION',
  [Status.OUT_OF_RANGE]: 'KYB_ERR_INVALID_ARGUMENT',
  [Status.UNIMPLEMENTED]: 'KYB_ERR_UNIMPLEMENTED',
  [Status.INTERNAL]: 'KYB_ERR_INTERNAL',
  [Status.UNAVAILABLE]: 'KYB_ERR_UNAVAILABLE',
  // Not KYB_ERR_CHECKPOINT_INVALID: that one is about our snapshots, not about what containerd lost.
  [Status.DATA_LOSS]: 'KYB_ERR_RUNTIME',
  [Status.UNAUTHENTICATED]: 'KYB_ERR_PERMISSION',
} as const satisfies Record<Exclude<StatusCode, typeof Status.OK>, ErrorCode>;

/** The code of an error that came back from a gRPC server with status `code`. */
export function fromStatus(code: number): ErrorCode {
  return (STATUS_CODES as Partial<Record<number, ErrorCode>>)[code] ?? 'KYB_ERR_RUNTIME';
}

const brand = Symbol.for('kybernate.error');

/** Our error class: a stable code, an optional cause, and (for RPC errors) the gRPC status. */
export class KybernateError extends Error {
  readonly code: ErrorCode;
  readonly [brand] = true;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KybernateError';
    this.code = code;
  }
  /** True for any KybernateError, also one from another copy of this module. */
  static is(err: unknown): err is KybernateError {
    return typeof err === 'object' && err !== null && (err as Record<symbol, unknown>)[brand] === true;
  }
}

export const errNotFound = (what: string) => new KybernateError('KYB_ERR_NOT_FOUND', `${what}: not found`);
export const errInvalid = (what: string) => new KybernateError('KYB_ERR_INVALID_ARGUMENT', what);
export const errPrecondition = (what: string) => new KybernateError('KYB_ERR_FAILED_PRECONDITION', what);
export const errExists = (what: string) => new KybernateError('KYB_ERR_ALREADY_EXISTS', `${what}: already exists`);
export const errUnimplemented = (what: string) => new KybernateError('KYB_ERR_UNIMPLEMENTED', what);

/** An error that came back over ttrpc/gRPC with a status code (client side). */
export class StatusError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'StatusError';
    this.status = status;
  }
}

/**
 * Maps any thrown value to a gRPC status and message. The one place where errors become codes:
 * KybernateError by its code; StatusError keeps its status; Node system errors by errno.
 */
export function toStatus(err: unknown): { code: number; message: string } {
  if (KybernateError.is(err)) return { code: ERROR_CODES[err.code] ?? Status.UNKNOWN, message: err.message };
  // Errors from the addon carry a table code too (NativeError is not a KybernateError: it also carries errno names).
  const tableCode = (err as { code?: unknown } | undefined)?.code;
  if (typeof tableCode === 'string' && tableCode in ERROR_CODES) {
    return { code: ERROR_CODES[tableCode as ErrorCode], message: (err as Error).message };
  }
  if (err instanceof StatusError) return { code: err.status, message: err.message };
  const e = err as NodeJS.ErrnoException | undefined;
  const message = e?.message ?? String(err);
  switch (e?.code) {
    case 'ENOENT': return { code: Status.NOT_FOUND, message };
    case 'EEXIST': return { code: Status.ALREADY_EXISTS, message };
    case 'EACCES': case 'EPERM': return { code: Status.PERMISSION_DENIED, message };
    case 'ABORT_ERR': return { code: Status.CANCELLED, message };
    default: return { code: Status.UNKNOWN, message };
  }
}
