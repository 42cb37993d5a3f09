import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { DEFAULT_RECLAIM_AGE_MS } from '../../src/ports/blob-store.js';

/**
 * A process killed (SIGKILL) in the middle of a write to an FsBlobStore, for real: a child
 * (test/support/fs-blob-writer.ts) writes a large object slowly and dies mid-way. What it leaves
 * is never visible, and reclaim removes it while another process's slow write to the same
 * directory carries on untouched.
 */

const MiB = 1024 * 1024;

/** A writer child; resolves `sent(n)` once the store has pulled n bytes of its body. */
function writer(root: string, key: string, bytes: number, chunk: number, pauseMs: number) {
  const child = spawn(
    process.execPath,
    ['--import', './test/support/register-ts.mjs', './test/support/fs-blob-writer.ts', root, key, String(bytes), String(chunk), String(pauseMs)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  let pulled = 0;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    output += s;
    for (const m of s.matchAll(/sent (\d+)/g)) pulled = Math.max(pulled, Number(m[1]));
    for (const w of waiters.filter((w) => pulled >= w.n)) w.resolve();
  });
  child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    exited,
    output: () => output,
    sent: (n: number) =>
      new Promise<void>((resolve, reject) => {
        if (pulled >= n) return resolve();
        waiters.push({ n, resolve });
        void exited.then(() => reject(new Error(`the writer exited before sending ${n} bytes:\n${output}`)));
      }),
  };
}

describe('FsBlobStore: a writer killed mid-write', () => {
  let root: string;
  const children: Array<ReturnType<typeof writer>> = [];
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'outpost-crash-'));
  });
  afterEach(() => {
    for (const w of children.splice(0)) w.child.kill('SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });

  it('leaves a partial temporary that get and list never show and reclaim removes, beside a live writer it leaves alone', async () => {
    const store = new FsBlobStore(root);
    await store.put('blobs/sha256/ab/kept', new Response('kept').body!);

    const doomed = writer(root, 'blobs/sha256/ab/doomed', 64 * MiB, 256 * 1024, 5);
    children.push(doomed);
    // Killed once several chunks are in its temporary file: the store writes them a batch of
    // 1 MiB at a time, and asks for the chunk after 2 MiB only once the first batch is written.
    await doomed.sent(3 * MiB);
    doomed.child.kill('SIGKILL');
    expect(await doomed.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(doomed.output()).not.toContain('done');

    const partial = readdirSync(join(root, '.tmp'));
    expect(partial).toHaveLength(1);
    const size = statSync(join(root, '.tmp', partial[0]!)).size;
    expect(size).toBeGreaterThan(0);
    expect(size).toBeLessThan(64 * MiB);
    expect(await store.stat('blobs/sha256/ab/doomed')).toBeUndefined();
    expect(await store.get('blobs/sha256/ab/doomed')).toBeUndefined();
    expect((await store.list('', { limit: 100 })).keys.map((o) => o.key)).toEqual(['blobs/sha256/ab/kept']);

    // Another process writes to the same store, slowly, while the sweep runs.
    const live = writer(root, 'blobs/sha256/ab/live', 4 * MiB, 256 * 1024, 50);
    children.push(live);
    await live.sent(512 * 1024);
    expect(readdirSync(join(root, '.tmp'))).toHaveLength(2);

    // Young leftovers stay (they could be a live writer's): the default grace keeps both.
    expect(await store.reclaim(DEFAULT_RECLAIM_AGE_MS)).toMatchObject({ temporary: 0 });
    expect(readdirSync(join(root, '.tmp'))).toHaveLength(2);
    // Once the dead writer's file is older than the grace, it goes; the live one stays.
    const then = new Date(Date.now() - DEFAULT_RECLAIM_AGE_MS - 60_000);
    utimesSync(join(root, '.tmp', partial[0]!), then, then);
    expect(await store.reclaim(DEFAULT_RECLAIM_AGE_MS)).toMatchObject({ temporary: 1 });
    expect(readdirSync(join(root, '.tmp'))).not.toContain(partial[0]);

    expect(await live.exited).toEqual({ code: 0, signal: null });
    expect(live.output()).toContain('done');
    expect(readdirSync(join(root, '.tmp'))).toEqual([]);
    expect((await store.list('', { limit: 100 })).keys.map((o) => [o.key, o.size])).toEqual([
      ['blobs/sha256/ab/kept', 4],
      ['blobs/sha256/ab/live', 4 * MiB],
    ]);
    expect(await store.stat('blobs/sha256/ab/doomed')).toBeUndefined();
  });
});
