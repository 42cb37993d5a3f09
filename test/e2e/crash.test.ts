import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';
import { SqliteMetaIndex } from '../../src/adapters/local/sqlite-meta-index.js';
import { reclaimUploads } from '../../src/core/registry/leftovers.js';
import { DEFAULT_RECLAIM_AGE_MS } from '../../src/ports/blob-store.js';
import { systemClock } from '../../src/ports/clock.js';
import { errorCode } from '../support/app.js';
import { blob, type Blob } from '../support/images.js';
import { startOutpost, type OutpostProcess } from './support/server.js';
import { slowRequest } from './support/slow-request.js';

/**
 * Outpost on the local store killed (SIGKILL) in the middle of writing a blob: during a large
 * monolithic upload, during a PATCH, and during the final PUT of a chunked upload. Each request
 * sends its body slowly from a raw socket, and the server is killed once it has written part of
 * it to its staging directory. After a restart on the same data directory nothing partial is
 * visible or served (HEAD and GET 404, the catalog and the store's own listing show nothing
 * new), the index is consistent (the upload answers its status), the upload is resumed or
 * pushed again, and reclaim removes what the crashes left: the store's staging files and empty
 * directories (FsBlobStore.reclaim), the parts of uploads that are gone (reclaimUploads).
 */

const MiB = 1024 * 1024;
/** Body pacing: 256 KiB every 10 ms, so a kill lands after a few MiB, well before the end. */
const CHUNK = 256 * 1024;
const PAUSE_MS = 10;

let work: string;
let data: string;
let server: OutpostProcess;
/** The data directory as another process sees it (the store is meant to be shared). */
let store: FsBlobStore;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'outpost-e2e-crash-'));
  data = join(work, 'data');
  server = await startOutpost(data);
  store = new FsBlobStore(data);
});

afterAll(async () => {
  await server?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

/** SIGKILL: no handler runs, nothing is flushed or cleaned up. Resolves once the process is gone. */
async function crash(): Promise<void> {
  process.kill(server.pid, 'SIGKILL');
  await server.stop();
}

async function restart(): Promise<void> {
  server = await startOutpost(data);
}

/** The files of writes in progress (or of writes that died): <data>/.tmp. */
async function staged(): Promise<Array<{ name: string; size: number }>> {
  let names: string[];
  try {
    names = await readdir(join(data, '.tmp'));
  } catch {
    return [];
  }
  const out = [];
  for (const name of names) {
    const info = await stat(join(data, '.tmp', name)).catch(() => undefined);
    if (info) out.push({ name, size: info.size });
  }
  return out;
}

/** Resolves once a staging file not in `known` holds at least `bytes`: the server is writing the body. */
async function untilStaging(known: string[], bytes: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await staged()).some((f) => !known.includes(f.name) && f.size >= bytes)) {
    if (Date.now() > deadline) throw new Error(`no staging file reached ${bytes} bytes; server output:\n${server.logs()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every key the store lists. */
async function objects(): Promise<string[]> {
  const keys: string[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await store.list('', after === undefined ? { limit: 1000 } : { after, limit: 1000 });
    keys.push(...page.keys.map((o) => o.key));
    if (page.next === undefined) return keys;
    after = page.next;
  }
}

/** Directories below the data directory that hold nothing (the staging directory aside). */
async function emptyDirectories(dir = data): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true });
  if (entries.length === 0 && dir !== data) out.push(dir.slice(data.length + 1));
  for (const e of entries) if (e.isDirectory() && !(dir === data && e.name === '.tmp')) out.push(...(await emptyDirectories(join(dir, e.name))));
  return out;
}

async function catalog(): Promise<string[]> {
  const res = await fetch(`${server.url}/v2/_catalog`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { repositories: string[] }).repositories;
}

/** Neither HEAD nor GET serves the blob: 404, BLOB_UNKNOWN. */
async function expectNotServed(name: string, digest: string): Promise<void> {
  const head = await fetch(`${server.url}/v2/${name}/blobs/${digest}`, { method: 'HEAD' });
  expect(head.status, `HEAD ${name}@${digest}`).toBe(404);
  const get = await fetch(`${server.url}/v2/${name}/blobs/${digest}`);
  expect(get.status, `GET ${name}@${digest}`).toBe(404);
  expect(await errorCode(get)).toBe('BLOB_UNKNOWN');
}

async function expectServed(name: string, content: Blob): Promise<void> {
  const res = await fetch(`${server.url}/v2/${name}/blobs/${content.digest}`);
  expect(res.status).toBe(200);
  expect(Buffer.from(await res.arrayBuffer()).equals(content.bytes)).toBe(true);
}

async function pushWhole(name: string, content: Blob): Promise<void> {
  const res = await fetch(`${server.url}/v2/${name}/blobs/uploads/?digest=${content.digest}`, {
    method: 'POST',
    body: new Uint8Array(content.bytes),
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  expect(res.status, await res.text()).toBe(201);
}

async function startUpload(name: string): Promise<string> {
  const res = await fetch(`${server.url}/v2/${name}/blobs/uploads/`, { method: 'POST' });
  expect(res.status).toBe(202);
  return res.headers.get('location')!;
}

async function patch(location: string, bytes: Uint8Array, start: number): Promise<string> {
  const res = await fetch(new URL(location, server.url), {
    method: 'PATCH',
    body: new Uint8Array(bytes),
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${start}-${start + bytes.byteLength - 1}` },
  });
  expect(res.status, await res.text()).toBe(202);
  expect(res.headers.get('range')).toBe(`0-${start + bytes.byteLength - 1}`);
  return res.headers.get('location')!;
}

/** PUT <location>?digest=, with the final chunk when one is given. */
function complete(location: string, digest: string, last?: { bytes: Uint8Array; start: number }): Promise<Response> {
  const url = new URL(location, server.url);
  url.searchParams.set('digest', digest);
  return fetch(url, {
    method: 'PUT',
    body: last && new Uint8Array(last.bytes),
    headers: last ? { 'Content-Type': 'application/octet-stream', 'Content-Range': `${last.start}-${last.start + last.bytes.byteLength - 1}` } : {},
  });
}

/** Path and query of a Location (the port changes with each restart; the path does not). */
function pathOf(location: string): string {
  const url = new URL(location, 'http://x');
  return url.pathname + url.search;
}

/**
 * Sends `body` slowly as the body of `method path`, and kills the server once `sent` bytes have
 * gone out and a new staging file holds `staging` bytes (the server is writing it to disk).
 * Returns the names of the staging files the killed write left.
 */
async function killDuring(
  method: string,
  path: string,
  headers: Record<string, string>,
  body: Uint8Array,
  at: { sent: number; staging: number },
): Promise<Array<{ name: string; size: number }>> {
  const known = (await staged()).map((f) => f.name);
  const request = slowRequest({
    port: server.port,
    method,
    path,
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(body.byteLength), ...headers },
    body,
    chunkBytes: CHUNK,
    pauseMs: PAUSE_MS,
  });
  await request.sent(at.sent);
  await untilStaging(known, at.staging);
  await crash();
  expect(await request.response, 'no answer from a killed server').toBeUndefined();
  return (await staged()).filter((f) => !known.includes(f.name));
}

describe('Outpost killed during a blob write', () => {
  it('during a large monolithic upload: nothing partial is visible, and the blob can be pushed again', async () => {
    const name = 'crash/monolithic';
    const content = blob(randomBytes(24 * MiB), 'application/octet-stream');
    const before = await objects();
    const partial = await killDuring('POST', `/v2/${name}/blobs/uploads/?digest=${content.digest}`, {}, content.bytes, { sent: 4 * MiB, staging: 2 * MiB });
    // The partial write stays behind in the staging directory, never under its key.
    expect(partial).toHaveLength(1);
    expect(partial[0]!.size).toBeLessThan(content.size);

    await restart();
    await expectNotServed(name, content.digest);
    expect(await catalog()).not.toContain(name);
    expect(await objects()).toEqual(before);

    await pushWhole(name, content);
    await expectServed(name, content);
  });

  it('during a PATCH: the upload stays at its last chunk, the chunk is sent again and the upload completes', async () => {
    const name = 'crash/patch';
    const content = blob(randomBytes(9 * MiB + 123), 'application/octet-stream');
    const first = content.bytes.subarray(0, MiB);
    const rest = content.bytes.subarray(MiB);
    const location = await patch(await startUpload(name), first, 0);
    const before = await objects();
    await killDuring('PATCH', pathOf(location), { 'Content-Range': `${MiB}-${content.size - 1}` }, rest, { sent: 3 * MiB, staging: MiB });

    await restart();
    // The index is consistent: the upload holds its first chunk and nothing of the killed one.
    const status = await fetch(new URL(location, server.url));
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe(`0-${MiB - 1}`);
    await expectNotServed(name, content.digest);
    expect(await catalog()).not.toContain(name);
    expect(await objects()).toEqual(before);

    // Resumed where it stood.
    const resumed = await patch(location, rest, MiB);
    const done = await complete(resumed, content.digest);
    expect(done.status, await done.text()).toBe(201);
    await expectServed(name, content);
    // Its chunks are gone, and their directory with them.
    const id = new URL(location, 'http://x').pathname.split('/').pop()!;
    expect((await objects()).filter((k) => k.startsWith(`uploads/${id}/`))).toEqual([]);
    await expect(stat(join(data, 'uploads', id))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('during the final PUT of a chunked upload: nothing is served, and the upload is completed again', async () => {
    const name = 'crash/final-put';
    const content = blob(randomBytes(9 * MiB + 321), 'application/octet-stream');
    const first = content.bytes.subarray(0, MiB);
    const rest = content.bytes.subarray(MiB);
    const location = await patch(await startUpload(name), first, 0);
    const url = new URL(location, 'http://x');
    url.searchParams.set('digest', content.digest);
    await killDuring('PUT', pathOf(url.href), { 'Content-Range': `${MiB}-${content.size - 1}` }, rest, { sent: 3 * MiB, staging: MiB });

    await restart();
    await expectNotServed(name, content.digest);
    expect(await catalog()).not.toContain(name);
    expect((await objects()).filter((k) => k.startsWith('blobs/') && k.endsWith(content.digest.slice('sha256:'.length)))).toEqual([]);

    // The commit never happened, so the upload is as it was before the PUT (a failed or
    // interrupted commit leaves the upload alone: issue 7 item 2): complete it again.
    const status = await fetch(new URL(location, server.url));
    expect(status.status, 'the upload survives a crash during its final PUT').toBe(204);
    expect(status.headers.get('range')).toBe(`0-${MiB - 1}`);
    const done = await complete(location, content.digest, { bytes: rest, start: MiB });
    expect(done.status, await done.text()).toBe(201);
    await expectServed(name, content);
  });

  it('leaves only what reclaim removes: staging files once older than the grace, and no empty directory', async () => {
    const dead = await staged();
    // One per crash: each killed write left its staging file.
    expect(dead.length).toBeGreaterThanOrEqual(3);
    // Younger than the grace, they could be a live writer's (the running server shares the directory): kept.
    expect(await store.reclaim(DEFAULT_RECLAIM_AGE_MS)).toMatchObject({ temporary: 0 });
    expect(await staged()).toHaveLength(dead.length);
    // An hour later (their mtime says so) they are a dead writer's: removed, while the server runs.
    const then = new Date(Date.now() - DEFAULT_RECLAIM_AGE_MS - 60_000);
    for (const f of dead) await utimes(join(data, '.tmp', f.name), then, then);
    expect(await store.reclaim(DEFAULT_RECLAIM_AGE_MS)).toMatchObject({ temporary: dead.length });
    expect(await staged()).toEqual([]);
    expect(await emptyDirectories()).toEqual([]);
    // Everything committed is still served.
    const res = await fetch(`${server.url}/v2/_catalog`);
    expect(((await res.json()) as { repositories: string[] }).repositories).toEqual(
      expect.arrayContaining(['crash/monolithic', 'crash/patch', 'crash/final-put']),
    );
  });

  it('reclaims the parts of uploads that are gone, never those of a live upload (reclaimUploads)', async () => {
    // A live upload, and the part a commit that died after deleting its state leaves behind
    // (written here as that process would have written it: the parts of an id the index never had).
    const live = await patch(await startUpload('crash/live'), new Uint8Array(1000).fill(5), 0);
    const orphan = `uploads/${randomUUID()}/0-${randomUUID()}`;
    await store.put(orphan, new Response('orphaned').body!);
    const index = new SqliteMetaIndex(join(data, 'index.db'), systemClock);
    try {
      await reclaimUploads({ store, index, clock: systemClock }, { olderThanMs: 0 });
    } finally {
      index.close();
    }
    const liveId = new URL(live, 'http://x').pathname.split('/').pop()!;
    expect((await objects()).filter((k) => k.startsWith('uploads/')).map((k) => k.split('/')[1])).toEqual([liveId]);
    expect(await emptyDirectories()).toEqual([]);
    const status = await fetch(new URL(live, server.url));
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe('0-999');
  });
});
