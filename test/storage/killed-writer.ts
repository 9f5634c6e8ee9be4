// Child process of disk-store.test.ts: puts 8 MiB chunks into the store at argv[2] until it is killed.
// It says "ready" once its first chunk is stored.
import crypto from 'node:crypto';
import { DiskChunkStore } from '../../src/storage/disk-store';

async function main(): Promise<void> {
  const store = await DiskChunkStore.open(process.argv[2]);
  for (let i = 0; ; i++) {
    const data = crypto.randomBytes(8 * 1024 * 1024);
    await store.put(crypto.createHash('sha256').update(data).digest('hex'), data);
    if (i === 0) process.stdout.write('ready\n');
  }
}

void main();
