// AgentClient: typed calls to a kybernate-agent, over its unix socket or over TCP with mutual TLS. Every
// failure is a KybernateError: the agent's own errors carry their code in the `kyb-code` trailer, which is
// taken as it is; a status without one (grpc-js's own, a proxy's) gets its code from the status alone
// (fromStatus). An agent that cannot be reached at all is an AgentUnreachableError (KYB_ERR_UNAVAILABLE),
// worded for the person who has to start it.
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ERROR_CODES, KybernateError, Status, fromStatus, type ErrorCode } from '../errors';
import {
  AGENT_SERVICE, KYB_CODE_KEY, agentDefinition, type AgentMethod, type RequestOf, type ResponseOf,
} from './definition';

/** Client certificate and the CA that signed the agent's: TCP connections are mutual TLS only. */
export interface AgentTls {
  ca: Buffer;
  /** The client's certificate chain and key (PEM); the agent refuses a client without them. */
  cert?: Buffer;
  key?: Buffer;
  /** The name to expect in the agent's certificate, when it is not the host of the address. */
  serverName?: string;
}

export interface AgentClientOptions {
  /** A unix socket ('/run/kybernate/agent.sock', 'unix:///…'), or HOST:PORT for TCP (needs tls). */
  address: string;
  tls?: AgentTls;
  /** Deadline of a call that names none (default 30 s). */
  timeoutMs?: number;
}

export interface CallOptions {
  /** The call's deadline; the agent stops waiting for the workload's turn when it passes. */
  timeoutMs?: number;
  /** Cancels the call (also an operation waiting for its turn, which then never runs). */
  signal?: AbortSignal;
}

/** The agent cannot be reached: not running, its socket stale, or the TLS handshake refused. */
export class AgentUnreachableError extends KybernateError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('KYB_ERR_UNAVAILABLE', message, options);
    this.name = 'AgentUnreachableError';
  }
}

const DEFAULT_TIMEOUT_MS = 30_000;
/**
 * Reconnect quickly after the agent restarts: grpc-js backs off up to 120 s by default, so a daemon holding a
 * client (the activator) would see a restarted agent as down for minutes.
 */
const CHANNEL_OPTIONS: grpc.ChannelOptions = { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1_000 };
/** setTimeout fires at once above this; longer deadlines are simply left unset. */
const MAX_DEADLINE_MS = 2 ** 31 - 1;

type Event = ResponseOf<'Events'>;

/** One channel to an agent; every method is one call. */
export class AgentClient {
  private readonly client: grpc.Client;
  private readonly socket: string | undefined;
  private readonly timeoutMs: number;

  constructor(private readonly opts: AgentClientOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const { address } = opts;
    if (address.startsWith('/') || address.startsWith('unix:')) {
      this.socket = address.replace(/^unix:(\/\/)?/, '');
      this.client = new grpc.Client(`unix://${this.socket}`, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      return;
    }
    if (!opts.tls) {
      throw new KybernateError('KYB_ERR_INVALID_ARGUMENT',
        `the agent at ${address} is TCP, which is mutual TLS only: give the CA and a client certificate and key`);
    }
    const { ca, cert, key, serverName } = opts.tls;
    const options: grpc.ChannelOptions = serverName ? { ...CHANNEL_OPTIONS, 'grpc.ssl_target_name_override': serverName } : CHANNEL_OPTIONS;
    this.client = new grpc.Client(address, grpc.credentials.createSsl(ca, key ?? null, cert ?? null), options);
  }

  list = this.unary('List');
  get = this.unary('Get');
  suspend = this.unary('Suspend');
  resume = this.unary('Resume');
  checkpoint = this.unary('Checkpoint');
  restore = this.unary('Restore');
  listSnapshots = this.unary('ListSnapshots');
  deleteSnapshot = this.unary('DeleteSnapshot');
  moveSnapshot = this.unary('MoveSnapshot');
  verifySnapshot = this.unary('VerifySnapshot');
  pinSnapshot = this.unary('PinSnapshot');
  collectGarbage = this.unary('CollectGarbage');
  gpus = this.unary('Gpus');
  health = this.unary('Health');
  version = this.unary('Version');

  /** State changes and operation progress until close() (or the signal); no deadline unless given. */
  events(req: RequestOf<'Events'> = {}, opts: CallOptions = {}): AgentEventStream {
    const def = agentDefinition.Events;
    const call = this.client.makeServerStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, req,
      new grpc.Metadata(), opts.timeoutMs === undefined ? {} : { deadline: deadline(opts.timeoutMs) });
    return new AgentEventStream(call, (err) => this.failure(err), opts.signal);
  }

  /** Resolves once the channel is connected (it connects now if idle); rejects after timeoutMs. */
  ready(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve()));
    });
  }

  close(): void {
    this.client.close();
  }

  private unary<K extends Exclude<AgentMethod, 'Events'>>(name: K):
    (req: RequestOf<K>, opts?: CallOptions) => Promise<ResponseOf<K>> {
    return (req, opts = {}) => new Promise((resolve, reject) => {
      const def = agentDefinition[name] as grpc.MethodDefinition<RequestOf<K>, ResponseOf<K>>;
      if (opts.signal?.aborted) {
        reject(cancelled(opts.signal));
        return;
      }
      const call = this.client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, req,
        new grpc.Metadata(), { deadline: deadline(opts.timeoutMs ?? this.timeoutMs) }, (err, res) => {
          opts.signal?.removeEventListener('abort', onAbort);
          if (err) reject(opts.signal?.aborted && err.code === Status.CANCELLED ? cancelled(opts.signal) : this.failure(err));
          else resolve(res as ResponseOf<K>);
        });
      const onAbort = (): void => call.cancel();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** A gRPC failure as our error; see the file comment. */
  private failure(err: grpc.ServiceError): KybernateError {
    const [sent] = err.metadata?.get(KYB_CODE_KEY) ?? [];
    const details = err.details || err.message;
    if (typeof sent === 'string' && sent in ERROR_CODES) return new KybernateError(sent as ErrorCode, details, { cause: err });
    if (err.code === Status.UNAVAILABLE) return this.unreachable(err);
    return new KybernateError(fromStatus(err.code), `${AGENT_SERVICE}: ${details}`, { cause: err });
  }

  private unreachable(err: grpc.ServiceError): KybernateError {
    const socket = this.socket;
    if (socket === undefined) {
      return new AgentUnreachableError(`cannot reach the kybernate agent at ${this.opts.address} (${err.details}): ` +
        'is it running with --tcp, and do the CA and client certificate match its --tls-ca?', { cause: err });
    }
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(socket);
      fs.accessSync(socket, fs.constants.W_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') {
        return new KybernateError('KYB_ERR_PERMISSION', `permission denied on the kybernate agent's socket ${socket}: it is root-only`, { cause: err });
      }
    }
    const why = stat === undefined ? `no socket at ${socket}` : `nothing answers at ${socket}`;
    return new AgentUnreachableError(
      `the kybernate agent is not running (${why}): start it with \`kybernate-agent\` or \`systemctl start kybernate-agent\``, { cause: err });
  }
}

/** Events as an async iterable (`for await`) or through on(); close() ends both without an error. */
export class AgentEventStream implements AsyncIterable<Event> {
  private closed = false;
  /**
   * Resolves once the agent has subscribed this stream (it sends its headers then): every change after
   * that is delivered. Rejects if the stream fails first.
   */
  readonly ready: Promise<void>;

  constructor(private readonly call: grpc.ClientReadableStream<Event>, private readonly failure: (err: grpc.ServiceError) => KybernateError,
    signal?: AbortSignal) {
    this.ready = new Promise((resolve, reject) => {
      call.once('metadata', () => resolve());
      call.once('error', (err: grpc.ServiceError) => reject(this.endError(err) ?? new KybernateError('KYB_ERR_CANCELLED', 'the event stream was closed')));
    });
    this.ready.catch(() => {});
    signal?.addEventListener('abort', () => this.close(), { once: true });
    if (signal?.aborted) this.close();
  }

  /** Callback style: each event to onEvent; onEnd once, with the error unless the stream was closed. */
  on(onEvent: (e: Event) => void, onEnd?: (err?: KybernateError) => void): this {
    this.call.on('data', onEvent);
    let ended = false;
    const end = (err?: KybernateError): void => {
      if (ended) return;
      ended = true;
      onEnd?.(err);
    };
    this.call.on('error', (err: grpc.ServiceError) => end(this.endError(err)));
    this.call.on('end', () => end());
    return this;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Event> {
    try {
      for await (const e of this.call) yield e as Event;
    } catch (err) {
      const mapped = this.endError(err as grpc.ServiceError);
      if (mapped) throw mapped;
    }
  }

  close(): void {
    this.closed = true;
    this.call.cancel();
  }

  private endError(err: grpc.ServiceError): KybernateError | undefined {
    if (this.closed && err.code === Status.CANCELLED) return undefined;
    return this.failure(err);
  }
}

function deadline(timeoutMs: number): grpc.Deadline {
  return timeoutMs > MAX_DEADLINE_MS ? Infinity : Date.now() + timeoutMs;
}

function cancelled(signal: AbortSignal): KybernateError {
  const reason: unknown = signal.reason;
  if (KybernateError.is(reason)) return reason;
  return new KybernateError('KYB_ERR_CANCELLED', reason instanceof Error ? reason.message : 'the call was cancelled');
}
