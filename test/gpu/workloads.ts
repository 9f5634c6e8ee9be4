// The two GPU containers of the container suite and how the suite asks them for their answers:
// - cuda: workload.cu --signal holding N GiB of device memory; SIGUSR1 makes it verify all of it and
//   write "<n> <bad words> <checksum>" to its /tmp/kyb-verify, read here through /proc/<pid>/root;
// - torch: torch-server.py, an HTTP server around a seeded MLP on the GPU; /infer and /weights answers.
// check() returns a string that must be identical before a checkpoint and after every restore/resume.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { HostProbe } from './gpu-spec';

export interface Workload {
  name: 'cuda' | 'torch';
  /** Process args inside the container (the suite's files are bound at FILES_DIR). */
  args: string[];
  env: string[];
  withPython: boolean;
  readyTimeoutMs: number;
  /** Resolves once the process (host pid) serves; throws with the reason otherwise. */
  ready(pid: number): Promise<void>;
  check(pid: number): Promise<string>;
}

/** Where the suite's files (workload binary, torch-server.py) appear inside the containers. */
export const FILES_DIR = '/kyb';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFile(pid: number, name: string, timeoutMs: number): Promise<string> {
  const file = path.join('/proc', String(pid), 'root', 'tmp', name);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch { /* not yet */ }
    if (!alive(pid)) throw new Error(`pid ${pid} exited before it wrote /tmp/${name}`);
    if (Date.now() > deadline) throw new Error(`pid ${pid} wrote no /tmp/${name} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

export function cudaWorkload(gib: number): Workload {
  return {
    name: 'cuda',
    args: [`${FILES_DIR}/workload`, String(gib), '0x5eed', '--signal'],
    env: [],
    withPython: false,
    readyTimeoutMs: 60_000,
    async ready(pid) {
      await waitFile(pid, 'kyb-ready', this.readyTimeoutMs);
    },
    async check(pid) {
      const file = path.join('/proc', String(pid), 'root', 'tmp', 'kyb-verify');
      const read = (): string[] => {
        try {
          return fs.readFileSync(file, 'utf8').trim().split(/\s+/);
        } catch {
          return ['0', '', ''];
        }
      };
      const before = Number(read()[0]);
      process.kill(pid, 'SIGUSR1');
      const deadline = Date.now() + 30_000;
      for (;;) {
        const [n, bad, sum] = read();
        if (Number(n) > before) {
          if (bad !== '0') throw new Error(`cuda workload: ${bad} bad words (checksum ${sum})`);
          return `bad=${bad} sum=${sum}`;
        }
        if (!alive(pid)) throw new Error(`cuda workload pid ${pid} exited`);
        if (Date.now() > deadline) throw new Error(`cuda workload pid ${pid} did not verify within 30 s of SIGUSR1`);
        await sleep(20);
      }
    },
  };
}

/** The torch server's unix socket inside its container (CRIU 4.1.1 cannot dump TCP sockets on Linux >= 6.16). */
const TORCH_SOCKET = '/tmp/kyb-torch.sock';

function get(pid: number, p: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    // agent: false and HTTP/1.0 on the server side: the connection is closed after each answer, so no
    // established connection exists when CRIU dumps the server. The socket is reached through the
    // server's root as the host sees it.
    const socketPath = path.join('/proc', String(pid), 'root', TORCH_SOCKET);
    const req = http.get({ socketPath, path: p, agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${p}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

export function torchWorkload(probe: HostProbe): Workload {
  if (!probe.python) throw new Error('torch workload: python3 with torch not found on this host');
  return {
    name: 'torch',
    args: [probe.python.executable, `${FILES_DIR}/torch-server.py`, '--socket', TORCH_SOCKET],
    env: ['PYTHONUNBUFFERED=1', 'CUBLAS_WORKSPACE_CONFIG=:4096:8', 'NCCL_NVLS_ENABLE=0',
      'TORCH_SYMM_MEM_DISABLE_MULTICAST=1', 'NVSHMEM_DISABLE_NVLS=1'],
    withPython: true,
    readyTimeoutMs: 150_000,
    async ready(pid) {
      await waitFile(pid, 'kyb-ready', this.readyTimeoutMs);
      const r = await get(pid, '/health', 10_000);
      if (r.status !== 200) throw new Error(`torch server /health: ${r.status} ${r.body}`);
    },
    async check(pid) {
      const parts: string[] = [];
      for (const p of ['/infer?x=0.5', '/infer?x=2.5', '/weights']) {
        const r = await get(pid, p, 60_000);
        if (r.status !== 200) throw new Error(`torch server ${p}: ${r.status} ${r.body}`);
        parts.push(r.body);
      }
      return parts.join('\n');
    },
  };
}
