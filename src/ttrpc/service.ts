// Typed layer: method tables over protobufjs generated classes, turned into raw handlers.
import { errInvalid } from '../errors';
import type { Decoder, Encoder } from './client';
import { strictReader } from './request-codec';
import type { CallContext, RawHandler } from './server-connection';
import type { TtrpcServer } from './server';

/** One unary method: how to decode its request, encode its response, and the handler between them. */
export interface MethodDef<Req, Res> {
  requestType: Decoder<Req>;
  responseType: Encoder<Res>;
  handler(req: Req, ctx: CallContext): Promise<Res> | Res;
}

/** A service's methods by name (the ttrpc method name, e.g. "Create"). */
export type ServiceTable = Record<string, MethodDef<any, any>>;

/** Builds a MethodDef with request and response types inferred from the generated classes. */
export function unary<Req, Res>(requestType: Decoder<Req>, responseType: Encoder<Res>,
  handler: (req: Req, ctx: CallContext) => Promise<Res> | Res): MethodDef<Req, Res> {
  return { requestType, responseType, handler };
}

/** Turns a typed table into raw handlers; undecodable request bytes become INVALID_ARGUMENT. */
export function rawHandlers(table: ServiceTable): Record<string, RawHandler> {
  const out: Record<string, RawHandler> = {};
  for (const [name, def] of Object.entries(table)) {
    out[name] = async (payload, ctx) => {
      let req: unknown;
      try {
        req = def.requestType.decode(strictReader(payload));
      } catch (err) {
        throw errInvalid(`unmarshal ${ctx.service}/${name} request: ${(err as Error).message}`);
      }
      const res = await def.handler(req, ctx);
      return def.responseType.encode(res).finish();
    };
  }
  return out;
}

/** Registers one table under each of `names` (e.g. containerd.task.v2.Task and containerd.task.v3.Task). */
export function registerService(server: TtrpcServer, names: string | string[], table: ServiceTable): void {
  const raw = rawHandlers(table);
  for (const name of Array.isArray(names) ? names : [names]) server.register(name, raw);
}
