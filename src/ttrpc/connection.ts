// One ttrpc byte stream: decodes incoming frames and serializes outgoing ones. Shared by client and server;
// it knows nothing about requests or responses.
import type { Socket } from 'node:net';
import { FrameDecoder } from './frame-decoder';
import { encodeFrame } from './frame-encoder';
import { MAX_MESSAGE_SIZE, type Frame, type FrameHeader } from './protocol';

/** Callbacks a Connection delivers to its owner. None of them may throw. */
export interface ConnectionEvents {
  frame(frame: Frame): void;
  /** A frame whose announced length exceeded the limit; its payload has been skipped. */
  oversize(header: FrameHeader): void;
  /** The peer finished sending (half-close). */
  end(): void;
  /** The socket is gone; fires exactly once. */
  close(err: Error | undefined): void;
}

export class Connection {
  private readonly decoder: FrameDecoder;
  private closed = false;
  private pausedForWrite = false;
  private error: Error | undefined;

  constructor(readonly socket: Socket, private readonly events: ConnectionEvents,
    readonly maxMessageSize = MAX_MESSAGE_SIZE) {
    this.decoder = new FrameDecoder(maxMessageSize);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => this.events.end());
    socket.on('error', (err) => { this.error ??= err; });
    socket.on('close', () => this.onClose());
    socket.on('drain', () => {
      if (this.pausedForWrite) {
        this.pausedForWrite = false;
        socket.resume();
      }
    });
    if (socket.destroyed) queueMicrotask(() => this.onClose());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Queues one frame. Returns false when the connection can no longer write. A peer that does not read
   * what we send stops being read from until the socket drains, so its requests cannot pile up replies.
   */
  send(streamId: number, type: number, flags: number, payload: Uint8Array): boolean {
    if (this.closed || this.socket.destroyed || !this.socket.writable) return false;
    const ok = this.socket.write(encodeFrame(streamId, type, flags, payload, this.maxMessageSize));
    if (!ok && !this.pausedForWrite) {
      this.pausedForWrite = true;
      this.socket.pause();
    }
    return true;
  }

  /** Ends our side after queued writes are flushed. */
  end(): void {
    if (!this.closed) this.socket.end();
  }

  destroy(err?: Error): void {
    if (err) this.error ??= err;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    try {
      for (const r of this.decoder.write(chunk)) {
        if (this.closed) return;
        if (r.kind === 'frame') this.events.frame(r.frame);
        else this.events.oversize(r.header);
      }
    } catch (err) {
      // A bug in an owner's callback must cost this connection, not the process.
      this.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.events.close(this.error);
  }
}
