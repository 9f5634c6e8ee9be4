// Date ↔ google.protobuf.Timestamp (src/timestamp.ts): nanos stays in [0, 1e9) on both sides of 1970,
// Go's zero time stands for "never", and a value survives the wire.
import Long from 'long';
import { describe, expect, it } from 'vitest';
import { google } from '../../src/gen/proto';
import { GO_ZERO_TIME_SECONDS, fromTimestamp, goZeroTime, toTimestamp } from '../../src/timestamp';

const plain = (t: google.protobuf.ITimestamp) => ({ seconds: Long.fromValue(t.seconds ?? 0).toNumber(), nanos: t.nanos });

describe('toTimestamp / fromTimestamp', () => {
  it('splits milliseconds into seconds and non-negative nanos, before and after 1970', () => {
    const cases: Array<[number, number, number]> = [
      [0, 0, 0],
      [1, 0, 1_000_000],
      [1999, 1, 999_000_000],
      [-1, -1, 999_000_000],
      [-1000, -1, 0],
      [-1001, -2, 999_000_000],
      [Date.UTC(2026, 10, 25, 12, 0, 0, 250), 1795608000, 250_000_000],
      [Date.UTC(1969, 11, 31, 23, 59, 59, 500), -1, 500_000_000],
    ];
    for (const [ms, seconds, nanos] of cases) {
      expect({ ms, ...plain(toTimestamp(new Date(ms))) }).toEqual({ ms, seconds, nanos });
    }
  });

  it('round-trips through the wire encoding', () => {
    for (const ms of [0, 1, -1, -999, 1_764_072_000_250, -86_400_000_123, GO_ZERO_TIME_SECONDS * 1000 + 1]) {
      const bytes = google.protobuf.Timestamp.encode(toTimestamp(new Date(ms))).finish();
      expect(fromTimestamp(google.protobuf.Timestamp.decode(bytes))?.getTime()).toBe(ms);
    }
  });

  it('maps undefined to Go zero time and back, and an absent Timestamp to undefined', () => {
    expect(plain(toTimestamp(undefined))).toEqual({ seconds: -62135596800, nanos: 0 });
    expect(plain(goZeroTime())).toEqual(plain(toTimestamp(undefined)));
    expect(new Date(GO_ZERO_TIME_SECONDS * 1000).toISOString()).toBe('0001-01-01T00:00:00.000Z');
    expect(fromTimestamp(goZeroTime())).toBeUndefined();
    expect(fromTimestamp(null)).toBeUndefined();
    expect(fromTimestamp(undefined)).toBeUndefined();
  });

  it('drops nanos below a millisecond toward the past', () => {
    expect(fromTimestamp({ seconds: Long.fromNumber(-1), nanos: 999_999_999 })?.getTime()).toBe(-1);
    expect(fromTimestamp({ seconds: Long.fromNumber(1), nanos: 1 })?.getTime()).toBe(1000);
  });
});
