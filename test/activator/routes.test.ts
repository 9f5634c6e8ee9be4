// Route parsing (every value validated, unknown keys refused, defaults filled) and matching (longest path
// prefix first, an exact host before "*", prefixes match on segment boundaries), and the daemon's config.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, reloadRoutes } from '../../src/activator/config';
import { ROUTE_DEFAULTS, RouteTable, parseRoutes, type RouteConfig } from '../../src/activator/routes';

const tmp = mkdtempSync(join(tmpdir(), 'kyb-routes-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const base = { workload: { id: 'web' }, upstream: '10.0.0.2:8080' };

describe('parseRoutes', () => {
  it('fills the defaults', () => {
    const [r] = parseRoutes([{ name: 'a', ...base }]);
    expect(r).toEqual({
      name: 'a', host: '*', pathPrefix: '/', workload: { namespace: 'default', id: 'web' }, upstream: '10.0.0.2:8080',
      sleep: ROUTE_DEFAULTS.sleep, probe: ROUTE_DEFAULTS.probe, limits: ROUTE_DEFAULTS.limits, failAfter: 3,
    });
  });

  it.each([
    [[{ name: 'a', ...base, sleeep: {} }], /unknown key "sleeep"/],
    [[{ name: 'a', ...base, sleep: { kind: 'nap' } }], /sleep.kind must be suspend, checkpoint or never/],
    [[{ name: 'a', ...base, sleep: { idleMs: -1 } }], /sleep.idleMs must be a whole number >= 1/],
    [[{ name: 'a', ...base, sleep: { idleMs: 1.5 } }], /sleep.idleMs must be a whole number/],
    [[{ name: 'a', ...base, upstream: 'nohost' }], /upstream must be HOST:PORT/],
    [[{ name: 'a', ...base, upstream: '10.0.0.2:0' }], /upstream must be HOST:PORT/],
    [[{ name: 'a', ...base, upstream: '10.0.0.2:70000' }], /upstream must be HOST:PORT/],
    [[{ name: 'a', ...base, workload: { id: '../x' } }], /workload.id "..\/x" is not a containerd name/],
    [[{ name: 'a', ...base, host: 'a b' }], /is not a host name/],
    [[{ name: 'a', ...base, pathPrefix: 'api' }], /pathPrefix must start with \//],
    [[{ name: 'a', ...base, probe: { http: '/x', tcp: true } }], /either http \(a path\) or tcp/],
    [[{ name: 'a', ...base, limits: { queue: 'many' } }], /limits.queue must be a whole number/],
    [[{ name: 'a', ...base }, { name: 'a', ...base, pathPrefix: '/b' }], /two routes are named a/],
    [[{ name: 'a', ...base }, { name: 'b', ...base }], /two routes for host \* and path prefix \//],
    [{ name: 'a' }, /"routes" must be a list/],
    [[{ ...base }], /name must be a non-empty string/],
  ])('refuses %j', (raw, err) => {
    expect(() => parseRoutes(raw)).toThrow(err);
  });
});

describe('RouteTable', () => {
  const routes = parseRoutes([
    { name: 'any', ...base },
    { name: 'api', ...base, pathPrefix: '/api' },
    { name: 'api-host', ...base, host: 'Model.Example', pathPrefix: '/api' },
    { name: 'v2', ...base, pathPrefix: '/api/v2/' },
  ]);
  const table = new RouteTable(routes.map((route: RouteConfig) => ({ route })));
  const m = (host: string | undefined, path: string): string | undefined => table.match(host, path)?.route.name;

  it('picks the longest prefix, then an exact host over "*"', () => {
    expect(m('x', '/')).toBe('any');
    expect(m('x', '/api')).toBe('api');
    expect(m('x', '/api/models?q=1')).toBe('api');
    expect(m('x', '/api?q=1')).toBe('api');
    expect(m('model.example:8080', '/api/x')).toBe('api-host');
    expect(m('MODEL.example', '/api')).toBe('api-host');
    expect(m('model.example', '/api/v2/x')).toBe('v2');
  });

  it('matches prefixes on segment boundaries', () => {
    expect(m('x', '/apix')).toBe('any');
    expect(m('x', '/api/v2')).toBe('api');
  });

  it('no route: undefined', () => {
    const only = new RouteTable(parseRoutes([{ name: 'h', ...base, host: 'a.example' }]).map((route) => ({ route })));
    expect(only.match('b.example', '/')).toBeUndefined();
    expect(only.match(undefined, '/')).toBeUndefined();
    expect(only.match('[::1]:80', '/')).toBeUndefined();
  });
});

describe('activator config', () => {
  it('the example in shim-config/ is valid and states the defaults', () => {
    const cfg = loadConfig(['--config', join(__dirname, '..', '..', 'shim-config', 'kybernate-activator.json')], {});
    if (typeof cfg === 'string') throw new Error(cfg);
    expect(cfg.listen).toEqual({ host: '127.0.0.1', port: 8480 });
    const [r] = cfg.routes;
    expect(r).toMatchObject({ name: 'llm', host: 'model.example', pathPrefix: '/v1', upstream: '10.88.64.2:8000' });
    expect(r!.sleep).toEqual(ROUTE_DEFAULTS.sleep);
    expect(r!.limits).toEqual(ROUTE_DEFAULTS.limits);
    expect(r!.failAfter).toBe(ROUTE_DEFAULTS.failAfter);
  });

  it('file, then flags; metrics only on loopback; routes read again from the file', () => {
    const file = join(tmp, 'a.json');
    writeFileSync(file, JSON.stringify({ '// note': 'x', listen: '0.0.0.0:9000', metrics: 'off', routes: [{ name: 'a', ...base }] }));
    const cfg = loadConfig(['--config', file, '--admin', join(tmp, 'admin.sock')], {});
    expect(cfg).toMatchObject({ listen: { host: '0.0.0.0', port: 9000 }, admin: join(tmp, 'admin.sock'), agent: '/run/kybernate/agent.sock' });
    expect((cfg as { metrics?: unknown }).metrics).toBeUndefined();
    expect(loadConfig(['--config', file, '--listen', '127.0.0.1:1'], { KYBERNATE_AGENT: '/x.sock' })).toMatchObject({ listen: { port: 1 }, agent: '/x.sock' });
    expect(() => loadConfig(['--config', file, '--metrics', '0.0.0.0:9'], {})).toThrow(/only on a loopback address/);
    writeFileSync(file, JSON.stringify({ routes: [{ name: 'b', ...base }] }));
    expect(reloadRoutes(file).map((r) => r.name)).toEqual(['b']);
    writeFileSync(file, '{"routes": [');
    expect(() => reloadRoutes(file)).toThrow(ConfigError);
    writeFileSync(file, JSON.stringify({ listn: 'x' }));
    expect(() => loadConfig(['--config', file], {})).toThrow(/unknown key "listn"/);
  });
});
