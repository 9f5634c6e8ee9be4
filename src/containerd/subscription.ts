// One Events.Subscribe stream. Invariants: onEnd runs exactly once, after the last onEvent; its error is
// undefined exactly when close() ended the stream, so a caller resubscribes whenever it gets one.
import type * as grpc from '@grpc/grpc-js';
import { KybernateError, Status } from '../errors';
import type { containerd } from '../gen/proto';
import { toEnvelope } from './convert';
import { Subscribe } from './methods';
import type { Channel } from './rpc';
import type { EventEnvelope } from './types';

export class Subscription {
  private readonly stream: grpc.ClientReadableStream<containerd.types.Envelope>;
  private closing = false;
  private done = false;
  private ended = false;
  private status: grpc.StatusObject | undefined;
  private streamError: grpc.ServiceError | undefined;
  private handlerError: Error | undefined;

  /** `onDone` runs once the stream is over (the client forgets it then). Throws when the channel is closed. */
  constructor(private readonly channel: Channel, filters: string[], private readonly onEvent: (e: EventEnvelope) => void,
    private readonly onEnd: (err?: Error) => void, private readonly onDone: (s: Subscription) => void) {
    this.stream = channel.serverStream(Subscribe, { filters });
    this.stream.on('data', (e: containerd.types.Envelope) => this.deliver(e));
    this.stream.on('error', (err: grpc.ServiceError) => { this.streamError = err; });
    this.stream.on('status', (s: grpc.StatusObject) => { this.status = s; this.finish(); });
    this.stream.on('end', () => { this.ended = true; this.finish(); });
  }

  /** Idempotent; onEnd() follows, with no error, unless the stream had ended already. */
  close(): void {
    if (this.closing || this.done) return;
    this.closing = true;
    this.stream.cancel();
  }

  private deliver(e: containerd.types.Envelope): void {
    if (this.closing || this.handlerError) return;
    try {
      this.onEvent(toEnvelope(e));
    } catch (err) {
      // A throwing handler ends the subscription with its error instead of unwinding into grpc-js.
      this.handlerError = err instanceof Error ? err : new Error(String(err));
      this.stream.cancel();
    }
  }

  // grpc-js ends the data before it reports the status, but 'end' comes only once the buffered events are
  // delivered: the stream is over when both have happened.
  private finish(): void {
    if (this.done || !this.ended || this.status === undefined) return;
    this.done = true;
    this.onDone(this);
    if (this.handlerError) return this.onEnd(this.handlerError);
    if (this.closing) return this.onEnd();
    if (this.status.code !== Status.OK && this.streamError) return this.onEnd(this.channel.error(Subscribe, this.streamError));
    this.onEnd(new KybernateError('KYB_ERR_UNAVAILABLE', `containerd ${Subscribe.name}: containerd ended the event stream`));
  }
}
