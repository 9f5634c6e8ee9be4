// Strict decoding of what a peer sends. The Request envelope is decoded here by hand, with protobuf-go's
// proto3 rules (containerd/ttrpc unmarshals it with proto.Unmarshal): a truncated field, a bad tag, a
// reserved wire type, an unbalanced group or a string that is not UTF-8 is an error; unknown fields and
// known fields of another wire type are skipped. protobufjs is lenient where Go is not: its Buffer reader
// clamps a string whose announced length runs past the end (so "0a17 conta" read as service "conta"), reads
// any wire type a known field arrives with, and never checks UTF-8.
import { isUtf8 } from 'node:buffer';
import protobuf from 'protobufjs/minimal';

/** A decoded ttrpc.Request (request.proto). */
export interface WireRequest {
  service: string;
  method: string;
  payload: Buffer;
  /** int64 nanoseconds; 0 means no deadline. Above 2^53 precision is lost, far past any armable timer. */
  timeoutNano: number;
  metadata: { key: string; value: string }[];
}

/** Why bytes are not a valid message; the server answers it as InvalidArgument. */
export class WireError extends Error {
  override name = 'WireError';
}

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_BYTES = 2;
const WIRE_START_GROUP = 3;
const WIRE_END_GROUP = 4;
const WIRE_FIXED32 = 5;
const MAX_FIELD_NUMBER = 2 ** 29 - 1;
const MAX_DEPTH = 10_000; // protobuf-go's default RecursionLimit

/** A cursor over one message's bytes. */
class Cursor {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  /** A varint of at most 10 bytes whose 10th byte is 0 or 1 (protowire.ConsumeVarint), as 64 unsigned bits. */
  varint(): bigint {
    let value = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new WireError(`truncated varint at byte ${this.pos}`);
      const b = this.buf[this.pos++]!;
      if (i === 9 && b > 1) throw new WireError(`varint overflows 64 bits at byte ${this.pos - 1}`);
      value |= BigInt(b & 0x7f) << BigInt(7 * i);
      if (b < 0x80) return value;
    }
    throw new WireError(`varint longer than 10 bytes at byte ${this.pos}`);
  }

  /** `n` bytes, or an error naming `what` and how many were left. */
  take(n: number, what: string): Buffer {
    const left = this.buf.length - this.pos;
    if (n > left) throw new WireError(`${what}: ${n} bytes announced, ${left} left`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A length-delimited field's contents. */
  bytes(what: string): Buffer {
    const n = this.varint();
    const left = this.buf.length - this.pos;
    if (n > BigInt(left)) throw new WireError(`${what}: ${n} bytes announced, ${left} left`);
    return this.take(Number(n), what);
  }

  /** A proto3 string: length-delimited and valid UTF-8. */
  string(what: string): string {
    const b = this.bytes(what);
    if (!isUtf8(b)) throw new WireError(`${what}: string is not valid UTF-8`);
    return b.toString('utf8');
  }

  /** The next tag: field number in [1, 2^29-1] and wire type. */
  tag(): { field: number; wire: number } {
    const at = this.pos;
    const t = this.varint();
    const field = t >> 3n;
    if (field === 0n || field > BigInt(MAX_FIELD_NUMBER)) throw new WireError(`field number ${field} at byte ${at}`);
    return { field: Number(field), wire: Number(t & 7n) };
  }

  /** Skips one field's value (protowire.ConsumeFieldValue); `field` is needed to match a group's end. */
  skip(field: number, wire: number): void {
    switch (wire) {
      case WIRE_VARINT: this.varint(); return;
      case WIRE_FIXED64: this.take(8, `field ${field} (fixed64)`); return;
      case WIRE_BYTES: this.bytes(`field ${field}`); return;
      case WIRE_FIXED32: this.take(4, `field ${field} (fixed32)`); return;
      case WIRE_START_GROUP: {
        // Iterative, so that deep nesting cannot overflow the JS stack; the limit is protobuf-go's.
        const open = [field];
        while (open.length > 0) {
          if (this.done) throw new WireError(`group ${open.at(-1)} has no end group`);
          const t = this.tag();
          if (t.wire === WIRE_END_GROUP) {
            if (t.field !== open.at(-1)) throw new WireError(`end group ${t.field} closes group ${open.at(-1)}`);
            open.pop();
          } else if (t.wire === WIRE_START_GROUP) {
            if (open.length >= MAX_DEPTH) throw new WireError('groups nested too deeply');
            open.push(t.field);
          } else {
            this.skip(t.field, t.wire);
          }
        }
        return;
      }
      case WIRE_END_GROUP: throw new WireError(`end group ${field} with no group open`);
      default: throw new WireError(`field ${field} has reserved wire type ${wire}`);
    }
  }
}

/** Decodes a Request envelope; throws WireError where containerd's ttrpc server would fail to unmarshal it. */
export function decodeRequest(bytes: Uint8Array): WireRequest {
  const c = new Cursor(asBuffer(bytes));
  const req: WireRequest = { service: '', method: '', payload: Buffer.alloc(0), timeoutNano: 0, metadata: [] };
  while (!c.done) {
    const { field, wire } = c.tag();
    if (field === 1 && wire === WIRE_BYTES) req.service = c.string('field 1 (service)');
    else if (field === 2 && wire === WIRE_BYTES) req.method = c.string('field 2 (method)');
    else if (field === 3 && wire === WIRE_BYTES) req.payload = c.bytes('field 3 (payload)');
    else if (field === 4 && wire === WIRE_VARINT) req.timeoutNano = Number(BigInt.asIntN(64, c.varint()));
    else if (field === 5 && wire === WIRE_BYTES) req.metadata.push(decodeKeyValue(c.bytes('field 5 (metadata)')));
    else c.skip(field, wire);
  }
  return req;
}

function decodeKeyValue(bytes: Buffer): { key: string; value: string } {
  const c = new Cursor(bytes);
  const kv = { key: '', value: '' };
  while (!c.done) {
    const { field, wire } = c.tag();
    if (field === 1 && wire === WIRE_BYTES) kv.key = c.string('metadata key');
    else if (field === 2 && wire === WIRE_BYTES) kv.value = c.string('metadata value');
    else c.skip(field, wire);
  }
  return kv;
}

/**
 * A protobufjs reader for generated decode() calls that fails on a length past the end instead of
 * clamping it: the base Reader over a plain Uint8Array view, not the BufferReader a Buffer would get.
 */
export function strictReader(bytes: Uint8Array): protobuf.Reader {
  return new protobuf.Reader(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}
