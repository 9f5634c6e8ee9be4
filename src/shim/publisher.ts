// Events to containerd: one ordered queue drained by one forwarder, so handlers never wait on containerd
// and events keep their order (TaskStart before TaskExit, init exit last). Each event is forwarded over
// ttrpc (Events.Forward on $TTRPC_ADDRESS) with a 5 s deadline and retried with a growing delay; after
// the last retry it is dropped with a log line, as containerd's own shims do.
import Long from 'long';
import type { Logger } from 'pino';
import { containerd, google } from '../gen/proto';
import { TtrpcClient } from '../ttrpc';
import { socketPath } from './address';

const FORWARD_TIMEOUT_MS = 5_000;
const MAX_ATTEMPTS = 5;
const EVENTS_SERVICE = 'containerd.services.events.ttrpc.v1.Events';

interface QueuedEvent { topic: string; typeUrl: string; value: Uint8Array; at: Date; attempts: number }

export class Publisher {
  private readonly queue: QueuedEvent[] = [];
  private client?: TtrpcClient;
  private draining = false;
  private closed = false;
  private idle: Array<() => void> = [];

  constructor(private readonly ttrpcAddress: string, private readonly namespace: string, private readonly log: Logger) {}

  /** Queues an event; `type` is the event's full proto name, e.g. containerd.events.TaskExit. */
  publish(topic: string, type: string, value: Uint8Array): void {
    if (this.closed) return;
    this.queue.push({ topic, typeUrl: type, value, at: new Date(), attempts: 0 });
    void this.drain();
  }

  /** Resolves once everything queued so far was forwarded or dropped. */
  flush(): Promise<void> {
    if (!this.draining && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private async connect(): Promise<TtrpcClient> {
    if (this.client) return this.client;
    const client = await TtrpcClient.connect(socketPath(this.ttrpcAddress));
    client.on('close', () => { if (this.client === client) this.client = undefined; });
    this.client = client;
    return client;
  }

  private encode(ev: QueuedEvent): Uint8Array {
    const ms = ev.at.getTime();
    return containerd.services.events.ttrpc.v1.ForwardRequest.encode({
      envelope: {
        timestamp: google.protobuf.Timestamp.create({ seconds: Long.fromNumber(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 }),
        namespace: this.namespace,
        topic: ev.topic,
        event: { type_url: ev.typeUrl, value: ev.value },
      },
    }).finish();
  }

  private async forward(ev: QueuedEvent): Promise<void> {
    const client = await this.connect();
    await client.call(EVENTS_SERVICE, 'Forward', this.encode(ev), {
      timeoutMs: FORWARD_TIMEOUT_MS,
      metadata: { 'containerd-namespace-ttrpc': this.namespace },
    });
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0 && !this.closed) {
        const ev = this.queue[0];
        try {
          await this.forward(ev);
          this.queue.shift();
        } catch (err) {
          ev.attempts++;
          this.client?.destroy();
          this.client = undefined;
          if (ev.attempts >= MAX_ATTEMPTS) {
            this.log.error({ topic: ev.topic, err: (err as Error).message }, 'dropping event after retries');
            this.queue.shift();
          } else {
            this.log.warn({ topic: ev.topic, attempt: ev.attempts, err: (err as Error).message }, 'event forward failed, retrying');
            await new Promise((r) => setTimeout(r, ev.attempts * 1000));
          }
        }
      }
    } finally {
      this.draining = false;
      for (const r of this.idle.splice(0)) r();
    }
  }

  /** Stops after the queue drained (bounded by timeoutMs). */
  async close(timeoutMs = 5_000): Promise<void> {
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.flush(), new Promise((r) => { t = setTimeout(r, timeoutMs); })]);
    clearTimeout(t);
    this.closed = true;
    this.client?.destroy();
  }
}
