// The header lists the proxy passes on: what a client sent, for the upstream; what the upstream answered,
// for the client. Both are flat [name, value, name, value, ...] arrays, the shape node's rawHeaders,
// undici's dispatch and node's writeHead() all take, so no header object is built per request.
//
// Invariants: hop-by-hop headers (RFC 9110 §7.6.1: Connection and every name it lists, Keep-Alive,
// Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) never cross the proxy, except on an upgrade's tunnel,
// where Connection and Upgrade are the request itself. Names keep the case they came with; values are
// passed byte for byte (latin1 both ways, as node writes headers).

const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade',
]);

/** True for a lower-case header name that must not be forwarded (besides those Connection lists). */
export function isHopByHop(lower: string): boolean {
  return HOP_BY_HOP.has(lower) || lower.startsWith('proxy-');
}

const ONLY_KEEP_ALIVE_OR_CLOSE = /^\s*(?:keep-alive|close)\s*$/i;

/**
 * Whether a header name, by its first character (lower-cased char code) and length, may be one this module
 * treats specially (hop-by-hop, Host, X-Forwarded-*, Expect, Cookie): the rest, most headers, are passed
 * on without lower-casing their names. A cheap pre-filter; the exact test follows.
 */
function mayBeSpecial(c: number, len: number): boolean {
  switch (c) {
    case 99 /* c */: return len === 10 || len === 6;
    case 101 /* e */: return len === 6;
    case 104 /* h */: return len === 4;
    case 107 /* k */: return len === 10;
    case 112 /* p */: return len >= 6;
    case 116 /* t */: return len === 2 || len === 7 || len === 17;
    case 117 /* u */: return len === 7;
    case 120 /* x */: return len >= 15 && len <= 17;
    default: return false;
  }
}

/**
 * The lower-case names a Connection header lists that are not dropped anyway ("keep-alive, X-Foo" → x-foo);
 * undefined for the usual "keep-alive" or "close", so the common request pays no second pass.
 */
function connectionTokens(value: string | undefined): Set<string> | undefined {
  if (value === undefined || ONLY_KEEP_ALIVE_OR_CLOSE.test(value)) return undefined;
  let listed: Set<string> | undefined;
  for (const t of value.split(',')) {
    const token = t.trim().toLowerCase();
    if (token === '' || token === 'close' || isHopByHop(token)) continue;
    (listed ??= new Set()).add(token);
  }
  return listed;
}

/** Drops from a flat list the names a Connection header listed (a rare case: most list only keep-alive or close). */
function withoutListed(out: string[], listed: Set<string>): string[] {
  const kept: string[] = [];
  for (let i = 0; i < out.length; i += 2) {
    if (!listed.has(out[i]!.toLowerCase())) kept.push(out[i]!, out[i + 1]!);
  }
  return kept;
}

/**
 * The headers to send upstream for a client's request, from its rawHeaders (HTTP/1.1, or HTTP/2 with its
 * pseudo-headers). Host is passed through (HTTP/2's :authority becomes Host); X-Forwarded-For gets the
 * client's address appended; X-Forwarded-Proto and -Host are kept when a proxy in front of us set them (it
 * saw the client's scheme and host; we did not), else set from what we saw. `upgrade`: a tunnel's request,
 * which keeps every header of the client's, Connection and Upgrade included (its bytes go on raw after it).
 */
export function requestHeaders(raw: string[], remoteAddress: string | undefined, upgrade = false): string[] {
  const out: string[] = [];
  let host: string | undefined;
  let authority: string | undefined;
  let forwardedFor: string | undefined;
  let forwardedProto: string | undefined;
  let forwardedHost: string | undefined;
  let connection: string | undefined;
  let cookies: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    if (name.charCodeAt(0) === 58 /* ':' */) {
      if (name === ':authority') authority = value;
      continue; // :method, :path, :scheme are the request line's, not headers
    }
    if (!mayBeSpecial(name.charCodeAt(0) | 0x20, name.length)) {
      out.push(name, value);
      continue;
    }
    const lower = name.toLowerCase();
    switch (lower) {
      case 'host': host ??= value; continue;
      case 'x-forwarded-for': forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`; continue;
      case 'x-forwarded-proto': forwardedProto ??= value; continue;
      case 'x-forwarded-host': forwardedHost ??= value; continue;
      // node answered "100 Continue" itself; undici refuses to send Expect.
      case 'expect': if (!upgrade) continue; break;
      // HTTP/2 may split Cookie into one header per cookie; HTTP/1.1 wants one line (RFC 9113 §8.2.3).
      case 'cookie':
        if (!upgrade) { cookies = cookies === undefined ? value : `${cookies}; ${value}`; continue; }
        break;
      default:
        if (!upgrade && isHopByHop(lower)) {
          if (lower === 'connection') connection = connection === undefined ? value : `${connection},${value}`;
          continue;
        }
    }
    out.push(name, value);
  }
  const listed = connectionTokens(connection);
  const headers = listed === undefined ? out : withoutListed(out, listed);
  if (cookies !== undefined) headers.push('cookie', cookies);
  host ??= authority;
  if (host !== undefined) headers.push('host', host);
  const client = remoteAddress ?? 'unknown';
  headers.push('x-forwarded-for', forwardedFor === undefined ? client : `${forwardedFor}, ${client}`);
  headers.push('x-forwarded-proto', forwardedProto ?? 'http');
  if (forwardedHost !== undefined || host !== undefined) headers.push('x-forwarded-host', (forwardedHost ?? host)!);
  return headers;
}

/** The headers to send the client for an upstream response (undici's raw Buffers), plus `extra`. */
export function responseHeaders(raw: Buffer[], extra?: Record<string, string>): string[] {
  const out: string[] = [];
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const b = raw[i]!;
    const name = b.toString('latin1');
    const lower = mayBeSpecial(b[0]! | 0x20, b.length) ? name.toLowerCase() : undefined;
    if (lower === undefined || !isHopByHop(lower)) {
      out.push(name, raw[i + 1]!.toString('latin1'));
    } else if (lower === 'connection') {
      const value = raw[i + 1]!.toString('latin1');
      connection = connection === undefined ? value : `${connection},${value}`;
    }
  }
  const listed = connectionTokens(connection);
  const headers = listed === undefined ? out : withoutListed(out, listed);
  if (extra !== undefined) for (const k in extra) headers.push(k, extra[k]!);
  return headers;
}
