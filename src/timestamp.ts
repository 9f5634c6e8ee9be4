// Date ↔ google.protobuf.Timestamp, for every message we send or read. A Timestamp's nanos is always in
// [0, 1e9), also before 1970: -1 ms is seconds -1, nanos 999_000_000 (the protobuf spec; Go's and
// protobufjs's decoders reject or misread a negative nanos).
import Long from 'long';
import type { google } from './gen/proto';

/** Go's zero time (0001-01-01T00:00:00Z): what containerd's shims report as exited_at for a process that has not exited. */
export const GO_ZERO_TIME_SECONDS = -62135596800;

/** A fresh Timestamp of Go's zero time. */
export function goZeroTime(): google.protobuf.ITimestamp {
  return { seconds: Long.fromNumber(GO_ZERO_TIME_SECONDS), nanos: 0 };
}

/** `d` as a Timestamp; undefined gives Go's zero time (containerd's "never"). */
export function toTimestamp(d: Date | undefined): google.protobuf.ITimestamp {
  if (d === undefined) return goZeroTime();
  const ms = d.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds: Long.fromNumber(seconds), nanos: (ms - seconds * 1000) * 1e6 };
}

/**
 * A Timestamp as a Date (millisecond precision: nanos below a millisecond are dropped, toward the past);
 * undefined for an absent one and for Go's zero time.
 */
export function fromTimestamp(t: google.protobuf.ITimestamp | null | undefined): Date | undefined {
  if (t === null || t === undefined) return undefined;
  const seconds = t.seconds === null || t.seconds === undefined ? 0 : Long.fromValue(t.seconds).toNumber();
  if (seconds === GO_ZERO_TIME_SECONDS && !t.nanos) return undefined;
  return new Date(seconds * 1000 + Math.floor((t.nanos ?? 0) / 1e6));
}
