// Incremental frame decoder: bytes in, whole frames out. Memory held is at most one header plus one
// payload of at most maxMessageSize; oversized payloads are skipped as they arrive, never buffered.
import { HEADER_LENGTH, MAX_MESSAGE_SIZE, type Frame, type FrameHeader } from './protocol';

/** Where the decoder is within the current frame. */
export enum ReadState {
  HEADER,
  PAYLOAD,
  DISCARD,
}

/** What the decoder yields: a complete frame, or the header of a frame whose payload was skipped. */
export type DecodeResult =
  | { kind: 'frame'; frame: Frame }
  | { kind: 'oversize'; header: FrameHeader };

export class FrameDecoder {
  private state = ReadState.HEADER;
  private readonly header = Buffer.alloc(HEADER_LENGTH);
  private headerFilled = 0;
  private current: FrameHeader = { length: 0, streamId: 0, type: 0, flags: 0 };
  private payload: Buffer = Buffer.alloc(0);
  private payloadFilled = 0;
  private discardLeft = 0;

  constructor(readonly maxMessageSize = MAX_MESSAGE_SIZE) {}

  /** True while bytes of an unfinished frame have been consumed (false exactly at a frame boundary). */
  get partial(): boolean {
    return this.state !== ReadState.HEADER || this.headerFilled > 0;
  }

  /** Consumes `chunk` and returns every frame it completes, in wire order. */
  write(chunk: Buffer): DecodeResult[] {
    const out: DecodeResult[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      switch (this.state) {
        case ReadState.HEADER: {
          const n = Math.min(HEADER_LENGTH - this.headerFilled, chunk.length - pos);
          chunk.copy(this.header, this.headerFilled, pos, pos + n);
          this.headerFilled += n;
          pos += n;
          if (this.headerFilled === HEADER_LENGTH) this.startFrame(out);
          break;
        }
        case ReadState.PAYLOAD: {
          const n = Math.min(this.payload.length - this.payloadFilled, chunk.length - pos);
          chunk.copy(this.payload, this.payloadFilled, pos, pos + n);
          this.payloadFilled += n;
          pos += n;
          if (this.payloadFilled === this.payload.length) this.finishFrame(out);
          break;
        }
        case ReadState.DISCARD: {
          const n = Math.min(this.discardLeft, chunk.length - pos);
          this.discardLeft -= n;
          pos += n;
          if (this.discardLeft === 0) {
            out.push({ kind: 'oversize', header: this.current });
            this.reset();
          }
          break;
        }
      }
    }
    return out;
  }

  private startFrame(out: DecodeResult[]): void {
    const h = this.header;
    this.current = { length: h.readUInt32BE(0), streamId: h.readUInt32BE(4), type: h[8]!, flags: h[9]! };
    this.headerFilled = 0;
    const { length } = this.current;
    if (length > this.maxMessageSize) {
      this.state = ReadState.DISCARD;
      this.discardLeft = length;
    } else if (length === 0) {
      this.payload = Buffer.alloc(0);
      this.finishFrame(out);
    } else {
      this.state = ReadState.PAYLOAD;
      this.payload = Buffer.allocUnsafe(length);
      this.payloadFilled = 0;
    }
  }

  private finishFrame(out: DecodeResult[]): void {
    const { streamId, type, flags } = this.current;
    out.push({ kind: 'frame', frame: { streamId, type, flags, payload: this.payload } });
    this.reset();
  }

  private reset(): void {
    this.state = ReadState.HEADER;
    this.payload = Buffer.alloc(0);
    this.payloadFilled = 0;
    this.discardLeft = 0;
  }
}
