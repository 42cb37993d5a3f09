import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, statSync, utimesSync } from 'node:fs';
import { readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { concat, equal, streamOf } from './blob-store-bodies.js';

/**
 * Composed objects of the local store: compose hard-links the parts as the pieces of the object
 * instead of copying their bytes (a fill's commit on the embedded store wrote every byte twice).
 * What the contract suite checks of compose holds for them too (blob-store.test.ts); these are
 * the local specifics: no byte copied, the pieces outlive the parts, reads across pieces, and
 * the pieces' life (retired on delete, replace and move; reclaimed once no link names them).
 */

let root: string;
let store: FsBlobStore;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'outpost-composed-'));
  store = new FsBlobStore(root);
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const HOUR = 3_600_000;

async function readAll(body: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) chunks.push(chunk);
  return concat(chunks);
}

/** Puts `sizes` random parts under fills/p/ and composes them onto `to`; returns the parts. */
async function composed(to: string, sizes: number[]) {
  const parts = sizes.map((n) => randomBytes(n));
  const keys = parts.map((_, i) => `fills/p/${String(i).padStart(4, '0')}`);
  for (const [i, key] of keys.entries()) await store.put(key, streamOf(parts[i]!), parts[i]!.byteLength, { scratch: true });
  expect(await store.compose(keys, to)).toEqual({ size: sizes.reduce((a, b) => a + b, 0) });
  return { parts, keys, whole: concat(parts) };
}

/** The pieces directory the link at `key` names. */
function piecesOf(key: string): string {
  const link = join(root, key);
  return resolve(dirname(link), readlinkSync(link));
}

function piecesDirs(): string[] {
  try {
    return readdirSync(join(root, '.pieces'));
  } catch {
    return [];
  }
}

/** Descriptors this process holds open on files under root, once the closes in flight have landed. */
async function openFiles(): Promise<number> {
  for (let tries = 0; ; tries++) {
    let n = 0;
    for (const fd of readdirSync('/proc/self/fd')) if ((await readlink(`/proc/self/fd/${fd}`).catch(() => '')).startsWith(root)) n++;
    if (n === 0 || tries >= 50) return n;
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('FsBlobStore bodies', () => {
  it('close every file they opened: cancelled before or during a read, empty objects and ranges, whole reads', async () => {
    await store.put('blobs/plain', streamOf(randomBytes(600_000)), 600_000);
    await store.put('blobs/empty', streamOf(new Uint8Array(0)), 0);
    await composed('blobs/composed', [300_000, 0, 300_000, 300_000]);
    for (const key of ['blobs/plain', 'blobs/composed']) {
      // Cancelled before any read, and after one.
      await (await store.get(key))!.body.cancel();
      const reader = (await store.get(key))!.body.getReader();
      await reader.read();
      await reader.cancel();
      // Read whole, and an empty range of it.
      await readAll((await store.get(key))!.body);
      await readAll((await store.get(key, { offset: 10, length: 0 }))!.body);
      await readAll((await store.get(key, { offset: 600_000, length: 10 }))!.body);
      expect(await openFiles(), key).toBe(0);
    }
    await readAll((await store.get('blobs/empty'))!.body);
    await (await store.get('blobs/empty'))!.body.cancel();
    expect(await openFiles()).toBe(0);
  });
});

describe('FsBlobStore composed objects', () => {
  it('are the parts themselves: the pieces are the part files, no byte is copied', async () => {
    const { keys, whole } = await composed('blobs/b', [100_000, 70_000, 1]);
    const dir = piecesOf('blobs/b');
    expect(dirname(dir)).toBe(join(root, '.pieces'));
    for (const [i, key] of keys.entries()) expect(statSync(join(dir, String(i).padStart(6, '0'))).ino).toBe(statSync(join(root, key)).ino);
    expect(equal(await readAll((await store.get('blobs/b'))!.body), whole)).toBe(true);
    expect(await store.stat('blobs/b')).toMatchObject({ size: whole.byteLength });
    expect(readdirSync(join(root, '.tmp'))).toEqual([]);
  });

  it('outlive their parts: deleting or replacing a part changes nothing', async () => {
    const { keys, whole } = await composed('blobs/b', [50_000, 60_000]);
    await store.delete(keys[0]!);
    await store.put(keys[1]!, streamOf(randomBytes(60_000)), 60_000);
    expect(equal(await readAll((await store.get('blobs/b'))!.body), whole)).toBe(true);
  });

  it('read any range, within a piece or across several', async () => {
    const { whole } = await composed('blobs/b', [1000, 1, 5000, 0, 3000]);
    for (const [offset, length] of [
      [0, 9001],
      [10, 20],
      [990, 20],
      [999, 2],
      [1000, 1],
      [1001, 5000],
      [5990, 3011],
      [9000, 1],
      [9001, 0],
      [8000, 5000],
    ] as const) {
      const got = (await store.get('blobs/b', { offset, length }))!;
      expect(got.size).toBe(9001);
      expect(equal(await readAll(got.body), whole.subarray(offset, offset + length)), `${offset}+${length}`).toBe(true);
    }
  });

  it('are listed with their size, and their pieces never are', async () => {
    await composed('blobs/b', [10, 20]);
    await store.put('blobs/a', streamOf(randomBytes(5)), 5);
    const listed = await store.list('', { limit: 100 });
    expect(listed.keys.map((o) => [o.key, o.size])).toEqual([
      ['blobs/a', 5],
      ['blobs/b', 30],
      ['fills/p/0000', 10],
      ['fills/p/0001', 20],
    ]);
    expect(await store.list('.pieces/', { limit: 10 })).toEqual({ keys: [] });
    await expect(store.stat('.pieces/x')).rejects.toThrow(/invalid object key/);
  });

  it('keep their pieces for a read that found them before a delete, until reclaim after the grace', async () => {
    const { whole } = await composed('blobs/b', [300_000, 300_000, 300_000]);
    const dir = piecesOf('blobs/b');
    // Made long ago: the delete touches the pieces, so the grace counts from it.
    const old = new Date(Date.now() - 2 * HOUR);
    utimesSync(dir, old, old);
    const reading = (await store.get('blobs/b'))!;
    await store.delete('blobs/b');
    expect(await store.stat('blobs/b')).toBeUndefined();
    await store.reclaim(HOUR);
    expect(equal(await readAll(reading.body), whole)).toBe(true);
    expect(piecesDirs()).toHaveLength(1);
    expect((await store.reclaim(0)).temporary).toBe(1);
    expect(piecesDirs()).toEqual([]);
  });

  it('are never reclaimed while a link names them, however old; pieces of a compose that died are, after the grace', async () => {
    const { whole } = await composed('blobs/deep/b', [1000, 2000]);
    const old = new Date(Date.now() - 2 * HOUR);
    utimesSync(piecesOf('blobs/deep/b'), old, old);
    // What a compose killed before its rename leaves: pieces no link names.
    mkdirSync(join(root, '.pieces', '00000000-0000-4000-8000-000000000000.5'), { recursive: true });
    const dead = join(root, '.pieces', '00000000-0000-4000-8000-000000000000.5');
    utimesSync(dead, old, old);
    expect((await store.reclaim(HOUR)).temporary).toBe(1);
    expect(piecesDirs()).toHaveLength(1);
    expect(equal(await readAll((await store.get('blobs/deep/b'))!.body), whole)).toBe(true);
  });

  it('are replaced whole by a put or another compose, and moved to any depth', async () => {
    await composed('blobs/b', [1000, 2000]);
    const first = piecesOf('blobs/b');
    const replacement = randomBytes(4000);
    await store.put('blobs/b', streamOf(replacement), 4000);
    expect(equal(await readAll((await store.get('blobs/b'))!.body), replacement)).toBe(true);
    // The replaced object's pieces were retired (touched) and go after the grace.
    expect((await store.reclaim(0)).temporary).toBe(1);
    expect(piecesDirs()).toEqual([]);
    expect(first).toBeTruthy();

    const { whole } = await composed('blobs/c', [3000, 3]);
    await store.move('blobs/c', 'elsewhere/much/deeper/c');
    expect(await store.stat('blobs/c')).toBeUndefined();
    expect(await store.stat('elsewhere/much/deeper/c')).toMatchObject({ size: 3003 });
    expect(equal(await readAll((await store.get('elsewhere/much/deeper/c'))!.body), whole)).toBe(true);
    // Moved whole: a second move of the same source finds nothing (one rename wins).
    await expect(store.move('blobs/c', 'blobs/d')).rejects.toThrow();
    expect(await store.stat('blobs/d')).toBeUndefined();
    expect((await store.reclaim(0)).temporary).toBe(0);
  });

  it('a compose whose pieces were reclaimed before its link landed fails and leaves nothing at the key', async () => {
    const parts = [randomBytes(1000), randomBytes(2000)];
    for (const [i, p] of parts.entries()) await store.put(`fills/r/${i}`, streamOf(p), p.byteLength, { scratch: true });
    // A reclaim that runs while this compose is paused, just before the link is renamed onto the key.
    const paused = store as unknown as { place: (from: string, to: string) => Promise<void> };
    const place = paused.place.bind(store);
    paused.place = async (from, to) => {
      for (const name of piecesDirs()) rmSync(join(root, '.pieces', name), { recursive: true, force: true });
      return place(from, to);
    };
    await expect(store.compose(['fills/r/0', 'fills/r/1'], 'blobs/r')).rejects.toThrow(/reclaimed while it was composed/);
    expect(await store.stat('blobs/r')).toBeUndefined();
    expect(readdirSync(join(root, '.tmp'))).toEqual([]);
  });

  it('compose a part that is itself composed by copying, with the right bytes', async () => {
    const a = await composed('blobs/a', [1000, 2000]);
    await store.put('fills/q/0000', streamOf(randomBytes(10)), 10);
    const tail = (await readAll((await store.get('fills/q/0000'))!.body)).slice();
    expect(await store.compose(['blobs/a', 'fills/q/0000'], 'blobs/ab')).toEqual({ size: 3010 });
    expect(equal(await readAll((await store.get('blobs/ab'))!.body), concat([a.whole, tail]))).toBe(true);
    expect(readlinkSync(join(root, 'blobs/a'))).toBeTruthy();
    expect(statSync(join(root, 'blobs/ab')).isFile()).toBe(true);
  });
});
