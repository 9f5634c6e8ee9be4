#!/usr/bin/env node
// Benchmark: the activator's warm path (its workload awake) next to direct access and next to nginx as a
// reverse proxy, in the same run with the same load generator (autocannon, programmatic, in this process):
//   - requests/s and latency at saturation (CONNECTIONS connections, DURATION_S s after a WARMUP_S s warm-up);
//   - latency at a light load (LIGHT_RATE requests/s over LIGHT_CONNECTIONS connections): the time a request
//     spends in the proxy, without the queueing that saturation adds to every target.
// Targets (issue 11): p99 added by the activator at most 1 ms; at least 0.8x nginx's requests/s. The fair
// comparison is nginx with worker_processes 1 (the activator is one process); "auto" is printed as well.
// Latencies are every 2xx response's own time (autocannon's histogram keeps whole milliseconds only).
// Usage: node test/bench/activator.cjs   (env: KYBERNATE_BENCH_ACTIVATOR_S=10, KYBERNATE_ACTIVATOR_BIN=path).
// Timings are printed, never asserted. Needs no containerd: the route's sleep kind is "never".
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const autocannon = require('autocannon');
const { REPO } = require('./helpers.cjs');
const { ms, diff, ratio, runBench, table } = require('./agent-support.cjs');

const ACTIVATOR_BIN = process.env.KYBERNATE_ACTIVATOR_BIN ?? path.join(REPO, 'bin', 'kybernate-activator');
const NGINX = '/usr/sbin/nginx';
const DURATION_S = Number(process.env.KYBERNATE_BENCH_ACTIVATOR_S ?? 10);
const WARMUP_S = 2;
const CONNECTIONS = 50;
const LIGHT_RATE = 1000;
const LIGHT_CONNECTIONS = 10;
const LIGHT_S = 3;
const ROUNDS = 2;
const START_TIMEOUT_MS = 30_000;

// The upstream: node's http server, a fixed small body, keep-alive longer than any proxy keeps its idle
// connections (so the proxies close them, never the upstream under a request).
const UPSTREAM_JS = `
const http = require('node:http');
const body = Buffer.from('hello from the upstream\\n');
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 120000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Spawns `cmd` (stopped by the cleanup); `exited` resolves with its exit code or signal. */
function spawnChild(cleanup, what, cmd, args) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((r) => child.once('exit', (code, signal) => r(code ?? signal)));
  const p = { child, exited, out: '' };
  const keep = (d) => { p.out = (p.out + d.toString()).slice(-65536); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  cleanup.add(what, async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    if (!(await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]))) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return p;
}

/** Spawns `cmd`; resolves with ready(line)'s first value other than undefined, over its output lines. */
function spawnReady(cleanup, what, cmd, args, ready) {
  const p = spawnChild(cleanup, what, cmd, args);
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => fail(`did not start within ${START_TIMEOUT_MS / 1000} s`), START_TIMEOUT_MS);
    function fail(why) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(new Error(`${what} ${why}:\n${p.out}`));
    }
    const onData = () => {
      if (done) return;
      for (const line of p.out.split('\n').slice(0, -1)) {
        const v = ready(line);
        if (v === undefined) continue;
        done = true;
        clearTimeout(timer);
        resolve(v);
        return;
      }
    };
    // After spawnChild's own listeners, so p.out already holds the chunk.
    p.child.stdout.on('data', onData);
    p.child.stderr.on('data', onData);
    p.child.on('error', (err) => fail(`failed: ${err.message}`));
    void p.exited.then((code) => fail(`exited (${code})`));
  });
}

async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

async function startUpstream(cleanup) {
  const port = await spawnReady(cleanup, 'upstream', process.execPath, ['-e', UPSTREAM_JS], (l) => (/^\d+$/.test(l.trim()) ? Number(l) : undefined));
  return `127.0.0.1:${port}`;
}

/** bin/kybernate-activator with one route to the upstream that never sleeps; its bound address. */
async function startActivator(cleanup, dir, upstream) {
  const config = path.join(dir, 'activator.json');
  fs.writeFileSync(config, JSON.stringify({
    listen: '127.0.0.1:0', admin: path.join(dir, 'admin.sock'), metrics: 'off', agent: path.join(dir, 'no-agent.sock'),
    routes: [{ name: 'bench', workload: { namespace: 'default', id: 'bench' }, upstream, sleep: { kind: 'never' } }],
  }));
  return spawnReady(cleanup, 'kybernate-activator', ACTIVATOR_BIN, ['--config', config], (line) => {
    if (!line.includes('"msg":"listening"')) return undefined;
    return JSON.parse(line).listen;
  });
}

/** nginx as a reverse proxy to the upstream: HTTP/1.1 and an idle-connection pool to it, X-Forwarded-*. */
async function startNginx(cleanup, dir, upstream, workers) {
  const prefix = path.join(dir, `nginx-${workers}`);
  fs.mkdirSync(prefix, { recursive: true });
  const port = await freePort();
  const conf = path.join(prefix, 'nginx.conf');
  fs.writeFileSync(conf, `daemon off;
worker_processes ${workers};
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  keepalive_requests 1000000;
  upstream workload { server ${upstream}; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://workload;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }
  }
}
`);
  // nginx prints nothing when it starts: it is ready when its port answers.
  const p = spawnChild(cleanup, `nginx (${workers})`, NGINX, ['-c', conf, '-p', `${prefix}/`, '-e', `${prefix}/error.log`]);
  let code;
  void p.exited.then((c) => { code = c; });
  for (let i = 0; i < 500 && code === undefined; i++) {
    if (await canConnect(port)) return `127.0.0.1:${port}`;
    await sleep(20);
  }
  const log = fs.existsSync(path.join(prefix, 'error.log')) ? fs.readFileSync(path.join(prefix, 'error.log'), 'utf8') : '';
  throw new Error(`nginx (${workers}) did not listen on ${port}${code === undefined ? '' : ` (exited ${code})`}: ${p.out}${log}`);
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  });
}

function percentile(sorted, p) {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** One autocannon run: every 2xx response's time (ms), the run's length (s), failures. */
async function load(address, opts) {
  const times = [];
  const tracker = autocannon({ url: `http://${address}/`, ...opts });
  tracker.on('response', (_client, status, _bytes, t) => { if (status >= 200 && status < 300) times.push(t); });
  const r = await tracker;
  return { times, duration: r.duration, bad: r.errors + r.timeouts + r.non2xx };
}

/** Runs of one target put together: requests/s over their whole time, percentiles over all responses. */
function merge(runs) {
  const times = runs.flatMap((r) => r.times).sort((a, b) => a - b);
  const duration = runs.reduce((s, r) => s + r.duration, 0);
  return { rps: times.length / duration, p50: percentile(times, 50), p99: percentile(times, 99), bad: runs.reduce((s, r) => s + r.bad, 0) };
}

/**
 * Every target warmed up, then ROUNDS rounds, each running every target in turn (saturation, then light
 * load): a change in the machine's background load during the run falls on all of them alike.
 */
async function measureAll(targets) {
  for (const t of targets) await load(t.address, { connections: CONNECTIONS, duration: WARMUP_S });
  const sat = new Map(targets.map((t) => [t.key, []]));
  const light = new Map(targets.map((t) => [t.key, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const t of targets) {
      sat.get(t.key).push(await load(t.address, { connections: CONNECTIONS, duration: DURATION_S / ROUNDS }));
      light.get(t.key).push(await load(t.address, { connections: LIGHT_CONNECTIONS, overallRate: LIGHT_RATE, duration: LIGHT_S / ROUNDS }));
      process.stdout.write('.');
    }
  }
  process.stdout.write('\n');
  const res = {};
  for (const t of targets) {
    res[t.key] = { sat: merge(sat.get(t.key)), light: merge(light.get(t.key)) };
    const bad = res[t.key].sat.bad + res[t.key].light.bad;
    if (bad > 0) console.log(`  ${t.label}: ${bad} requests failed (errors, timeouts or non-2xx)`);
  }
  return res;
}

async function main(cleanup) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kyb-bench-activator-'));
  cleanup.add(dir, () => fs.rmSync(dir, { recursive: true, force: true }));
  const nginxVersion = fs.existsSync(NGINX) ? await nginxVersionOf() : undefined;
  const autoWorkers = os.cpus().length;
  console.log(`Activator warm path (workload awake), ${os.cpus().length} CPU cores, node ${process.version}; the load generator,
the upstream (node http, 24-byte body) and each proxy are processes of their own on this machine.
  saturation: ${CONNECTIONS} connections, ${DURATION_S} s per target after a ${WARMUP_S} s warm-up; light load: ${LIGHT_RATE} requests/s
  over ${LIGHT_CONNECTIONS} connections, ${LIGHT_S} s per target; ${ROUNDS} rounds, each running every target in turn`);
  const upstream = await startUpstream(cleanup);
  const targets = [{ key: 'direct', label: 'direct', address: upstream }];
  if (fs.existsSync(ACTIVATOR_BIN)) {
    targets.push({ key: 'activator', label: 'activator', address: await startActivator(cleanup, dir, upstream) });
  } else {
    console.log(`  activator: skipped: ${ACTIVATOR_BIN} missing (make build)`);
  }
  if (nginxVersion) {
    targets.push({ key: 'nginx1', label: 'nginx 1 worker', address: await startNginx(cleanup, dir, upstream, 1) });
    targets.push({ key: 'nginxAuto', label: `nginx auto (${autoWorkers})`, address: await startNginx(cleanup, dir, upstream, 'auto') });
  } else {
    console.log(`  nginx: skipped: ${NGINX} missing (apt-get install nginx-light)`);
  }
  // A target that does not answer 200 (a route the daemon will not serve) would measure its errors.
  for (const t of [...targets]) {
    const r = await fetch(`http://${t.address}/`).then(async (x) => ({ status: x.status, text: await x.text() }), (err) => ({ status: 0, text: err.message }));
    if (r.status === 200) continue;
    console.log(`  ${t.label}: skipped: GET / answered ${r.status || 'nothing'}: ${r.text.trim().split('\n')[0]}`);
    targets.splice(targets.indexOf(t), 1);
  }
  const res = await measureAll(targets);
  const cols = targets.map((t) => [t.key, t.label]);
  const cell = (k, f) => (res[k] ? f(res[k]) : '-');
  const d = res.direct;
  const rows = [
    ['', ...cols.map(([, label]) => label)],
    ['requests/s, saturation', ...cols.map(([k]) => cell(k, (x) => String(Math.round(x.sat.rps))))],
    ['  vs direct', ...cols.map(([k]) => cell(k, (x) => ratio(x.sat.rps, d.sat.rps)))],
    ['p50 latency, saturation', ...cols.map(([k]) => cell(k, (x) => ms(x.sat.p50)))],
    ['p99 latency, saturation', ...cols.map(([k]) => cell(k, (x) => ms(x.sat.p99)))],
    ['p50 latency, light load', ...cols.map(([k]) => cell(k, (x) => ms(x.light.p50)))],
    ['p99 latency, light load', ...cols.map(([k]) => cell(k, (x) => ms(x.light.p99)))],
    ['added p50 / p99, light load', ...cols.map(([k]) => cell(k, (x) => `${diff(x.light.p50, d.light.p50)} / ${diff(x.light.p99, d.light.p99)}`))],
    ['added p50 / p99, saturation', ...cols.map(([k]) => cell(k, (x) => `${diff(x.sat.p50, d.sat.p50)} / ${diff(x.sat.p99, d.sat.p99)}`))],
  ];
  console.log(`\n${table(rows)}`);
  const a = res.activator;
  if (!a) console.log('  activator: no figures (see above); targets not checked');
  if (a && res.nginx1) {
    console.log(`  activator/nginx requests/s: ${ratio(a.sat.rps, res.nginx1.sat.rps)} (1 worker), ${ratio(a.sat.rps, res.nginxAuto.sat.rps)} (auto); nginx ${nginxVersion}`);
  }
  if (a) {
    const added = a.light.p99 - d.light.p99;
    console.log(`  target: p99 added at most 1 ms (light load): ${added <= 1 ? 'met' : 'MISSED'} (${diff(a.light.p99, d.light.p99)})`);
  }
  if (a && res.nginx1) {
    const r = a.sat.rps / res.nginx1.sat.rps;
    console.log(`  target: at least 0.8x nginx's requests/s (1 worker): ${r >= 0.8 ? 'met' : 'MISSED'} (${ratio(a.sat.rps, res.nginx1.sat.rps)})`);
  }
}

function nginxVersionOf() {
  return new Promise((resolve) => {
    const c = spawn(NGINX, ['-v'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stderr.on('data', (d) => { out += d; });
    c.on('error', () => resolve(undefined));
    c.on('exit', () => resolve(/nginx\/(\S+)/.exec(out)?.[1] ?? 'unknown version'));
  });
}

runBench(main);
