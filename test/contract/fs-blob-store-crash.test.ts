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

/** A child running `script` with `args`; `when(check)` resolves once its output passes `check`. */
function running(script: string, args: string[]) {
  const child = spawn(process.execPath, ['--import', './test/support/register-ts.mjs', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const waiters: Array<{ check: (output: string) => boolean; resolve: () => void }> = [];
  const heard = (s: string) => {
    output += s;
    for (const w of waiters.filter((w) => w.check(output))) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  child.stdout.setEncoding('utf8').on('data', heard);
  child.stderr.setEncoding('utf8').on('data', heard);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return {
    child,
    exited,
    output: () => output,
    when: (check: (output: string) => boolean) =>
      new Promise<void>((resolve, reject) => {
        if (check(output)) return resolve();
        waiters.push({ check, resolve });
        void exited.then(() => reject(new Error(`the child exited first:\n${output}`)));
      }),
  };
}

/** A writer child; resolves `sent(n)` once the store has pulled n bytes of its body. */
function writer(root: string, key: string, bytes: number, chunk: number, pauseMs: number) {
  const child = running('./test/support/fs-blob-writer.ts', [root, key, String(bytes), String(chunk), String(pauseMs)]);
  const pulled = (output: string) => Math.max(0, ...[...output.matchAll(/sent (\d+)/g)].map((m) => Number(m[1])));
  return { ...child, sent: (n: number) => child.when((output) => pulled(output) >= n) };
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

describe('FsBlobStore: a composer killed anywhere', () => {
  let root: string;
  let composer: ReturnType<typeof running> | undefined;
  afterEach(() => {
    composer?.child.kill('SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });

  it('leaves every object it made whole or absent, and reclaim removes what it left, never a linked piece', async () => {
    const PARTS = 12;
    const PART = 64 * 1024;
    const whole = Buffer.concat(Array.from({ length: PARTS }, (_, i) => Buffer.alloc(PART, i + 1)));
    for (let round = 0; round < 6; round++) {
      root = mkdtempSync(join(tmpdir(), 'outpost-crash-compose-'));
      composer = running('./test/support/fs-composer.ts', [root, String(PARTS), String(PART)]);
      // A few composes in, then at a moment that differs each round.
      await composer.when((output) => output.includes(`composed ${1 + round}`));
      await new Promise((r) => setTimeout(r, round * 3));
      composer.child.kill('SIGKILL');
      expect(await composer.exited).toEqual({ code: null, signal: 'SIGKILL' });

      const store = new FsBlobStore(root);
      const objects = (await store.list('blobs/', { limit: 100 })).keys;
      expect(objects.length, composer.output()).toBeGreaterThan(0);
      for (const o of objects) {
        expect(o.size, o.key).toBe(whole.byteLength);
        expect(Buffer.from(await new Response((await store.get(o.key))!.body).arrayBuffer()).equals(whole), o.key).toBe(true);
      }
      // Whatever the kill left (a temporary link, pieces no link names) goes; linked pieces stay.
      await store.reclaim(0);
      expect(readdirSync(join(root, '.tmp'))).toEqual([]);
      expect(readdirSync(join(root, '.pieces'))).toHaveLength(objects.length);
      for (const o of objects) expect(Buffer.from(await new Response((await store.get(o.key))!.body).arrayBuffer()).equals(whole), o.key).toBe(true);
      rmSync(root, { recursive: true, force: true });
    }
    root = mkdtempSync(join(tmpdir(), 'outpost-crash-compose-'));
  });
});
