// ttrpc wire constants and the frame header shape (containerd/ttrpc channel.go, PROTOCOL.md).

/** Bytes in a frame header: u32 BE length, u32 BE stream id, u8 type, u8 flags. */
export const HEADER_LENGTH = 10;

/** Largest payload either side accepts or sends (4 MiB, as Go and Rust ttrpc). */
export const MAX_MESSAGE_SIZE = 4 << 20;

/** Frame types. Unknown types are ignored for forward compatibility. */
export const MessageType = {
  REQUEST: 0x01,
  RESPONSE: 0x02,
  DATA: 0x03,
} as const;

/** Frame flags. */
export const Flags = {
  REMOTE_CLOSED: 0x01,
  REMOTE_OPEN: 0x02,
  NO_DATA: 0x04,
} as const;

/** A decoded frame header; `length` is the payload length announced on the wire. */
export interface FrameHeader {
  length: number;
  streamId: number;
  type: number;
  flags: number;
}

/** A complete frame. */
export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  payload: Buffer;
}

/** The message Go ttrpc uses for frames above the limit (errors.go OversizedMessageErr). */
export function oversizeMessage(length: number, max: number): string {
  return `message length ${length} exceed maximum message size of ${max}`;
}

/** Request metadata as handlers see it: lower-cased keys, repeated keys kept in order. */
export type Metadata = Map<string, string[]>;

/** Turns the wire's KeyValue list into a Metadata map. */
export function metadataFromPairs(pairs: Iterable<{ key?: string | null; value?: string | null }>): Metadata {
  const md: Metadata = new Map();
  for (const { key, value } of pairs) {
    const k = (key ?? '').toLowerCase();
    const list = md.get(k);
    if (list) list.push(value ?? '');
    else md.set(k, [value ?? '']);
  }
  return md;
}

/** Turns caller metadata into the wire's KeyValue list (keys lower-cased like Go's MD). */
export function metadataToPairs(md: Record<string, string | string[]> | Metadata): { key: string; value: string }[] {
  const entries = md instanceof Map ? md.entries() : Object.entries(md);
  const out: { key: string; value: string }[] = [];
  for (const [key, value] of entries) {
    for (const v of Array.isArray(value) ? value : [value]) out.push({ key: key.toLowerCase(), value: v });
  }
  return out;
}
