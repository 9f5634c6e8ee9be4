// Frame encoding. Each frame is one Buffer so a single socket write keeps it contiguous on the wire.
import { HEADER_LENGTH, MAX_MESSAGE_SIZE, type FrameHeader } from './protocol';

/** Writes the 10-byte header for `h` into a new Buffer. */
export function encodeHeader(h: FrameHeader): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_LENGTH);
  writeHeader(buf, h);
  return buf;
}

function writeHeader(buf: Buffer, h: FrameHeader): void {
  buf.writeUInt32BE(h.length, 0);
  buf.writeUInt32BE(h.streamId, 4);
  buf.writeUInt8(h.type, 8);
  buf.writeUInt8(h.flags, 9);
}

/** Header plus payload in one Buffer. Throws RangeError when the payload exceeds `max`. */
export function encodeFrame(streamId: number, type: number, flags: number, payload: Uint8Array,
  max = MAX_MESSAGE_SIZE): Buffer {
  if (payload.length > max) throw new RangeError(`payload of ${payload.length} bytes exceeds ${max}`);
  const buf = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  writeHeader(buf, { length: payload.length, streamId, type, flags });
  buf.set(payload, HEADER_LENGTH);
  return buf;
}
