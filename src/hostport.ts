// HOST:PORT as the daemons' flags take it (agent, activator), and the loopback rule for endpoints served
// without authentication (metrics).
import net from 'node:net';

export interface HostPort { host: string; port: number }

/** HOST:PORT or [IPv6]:PORT; undefined when `s` is neither (the caller words the error for its flag). */
export function parseHostPort(s: string): HostPort | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  const port = Number(m?.[3]);
  if (!m || port > 65535) return undefined;
  return { host: m[1] ?? m[2]!, port };
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  return net.isIPv6(host) && (host === '::1' || host === '0:0:0:0:0:0:0:1');
}

/** HOST:PORT as grpc-js and URLs want it (IPv6 in brackets). */
export function formatHostPort(h: HostPort): string {
  return net.isIPv6(h.host) ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`;
}
