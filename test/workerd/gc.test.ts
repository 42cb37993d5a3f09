import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from 'cloudflare:test';
import { env } from 'cloudflare:workers';
import { afterEach, expect, inject, it, vi } from 'vitest';
import { parseDigest } from '../../src/core/oci/digest.js';
import { objects } from '../../src/core/registry/keys.js';
import worker from '../../src/entry/workers.js';
import { image, randomBlob, type Blob, type Image } from '../support/images.js';
import { bindingsS3 } from './s3.js';

/**
 * Garbage collection on Workers, inside workerd: content pushed and deleted through the
 * Worker's HTTP API, then the Worker's scheduled handler (what a Cron Trigger calls) over the
 * real S3 and DynamoDB, with the grace at its minimum of a minute and the clock moved past it.
 * The store is this file's own (global-setup.ts): with its clock moved on, the run would take
 * what other files have just pushed and not yet named. The Worker module is called directly,
 * with the project's bindings but that store and a configuration document; each test file has
 * a module instance of its own, so the app built here is built from that env.
 */

const store = inject('workerdGcStore');
const gcEnv = { ...env, OUTPOST_S3_BUCKET: store.bucket, OUTPOST_DYNAMODB_TABLE: store.table, OUTPOST_CONFIG: 'gc:\n  grace: 1m\n' };
const repo = `workerd/${crypto.randomUUID().slice(0, 8)}/gc`;
const CRON = '0 * * * *';
/** Past gc.grace (1m) and well within the 15 minutes of clock skew S3 accepts in a signature. */
const LATER_MS = 2 * 60_000;

const s3 = bindingsS3();

function request(path: string, init?: RequestInit): Promise<Response> {
  return worker.fetch(new Request(`http://outpost.test${path}`, init), gcEnv, {});
}

async function pushBlob(b: Blob): Promise<void> {
  const res = await request(`/v2/${repo}/blobs/uploads/?digest=${b.digest}`, { method: 'POST', body: new Uint8Array(b.bytes) });
  expect(res.status, await res.text()).toBe(201);
}

async function pushImage(img: Image, tag: string): Promise<void> {
  for (const b of [img.config, ...img.layers]) await pushBlob(b);
  const res = await request(`/v2/${repo}/manifests/${tag}`, { method: 'PUT', body: new Uint8Array(img.manifest.bytes), headers: { 'Content-Type': img.manifest.mediaType } });
  expect(res.status, await res.text()).toBe(201);
}

async function deleteBlob(b: Blob): Promise<void> {
  expect((await request(`/v2/${repo}/blobs/${b.digest}`, { method: 'DELETE' })).status).toBe(202);
}

/** Whether the store holds the bytes of `b`, asked of S3 itself. */
async function stored(b: Blob): Promise<boolean> {
  try {
    await s3.send(new HeadObjectCommand({ Bucket: store.bucket, Key: objects.content(parseDigest(b.digest)) }));
    return true;
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw err;
  }
}

/** One scheduled event, as the Cron Trigger sends it, run to the end of its waitUntil work; the log lines it wrote. */
async function scheduledRun(): Promise<Array<Record<string, unknown>>> {
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((line: unknown) => void lines.push(String(line)));
  try {
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ cron: CRON, scheduledTime: Date.now() }), gcEnv, ctx);
    // Whatever it handed to waitUntil has settled too (a rejection would throw here).
    await waitOnExecutionContext(ctx);
  } finally {
    spy.mockRestore();
  }
  return lines.map((line) => JSON.parse(line) as Record<string, unknown>);
}

function line(lines: Array<Record<string, unknown>>, msg: string): Record<string, unknown> {
  const found = lines.filter((l) => l.msg === msg);
  expect(found, `one "${msg}" line in ${JSON.stringify(lines)}`).toHaveLength(1);
  return found[0]!;
}

afterEach(() => {
  vi.restoreAllMocks();
});

it('deletes what nothing references once the grace has passed, and keeps what a manifest names', async () => {
  // Kept: an image under a tag; its first layer's link is deleted, but the manifest still names it.
  const kept = image({ layers: [512, 700] });
  await pushImage(kept, 'kept');
  await deleteBlob(kept.layers[0]!);
  // Garbage: a blob pushed and deleted; an image whose manifest and blob links were all deleted.
  const lone = randomBlob(3000);
  await pushBlob(lone);
  await deleteBlob(lone);
  const dropped = image({ layers: [900] });
  await pushImage(dropped, 'dropped');
  expect((await request(`/v2/${repo}/manifests/${dropped.manifest.digest}`, { method: 'DELETE' })).status).toBe(202);
  for (const b of [dropped.config, ...dropped.layers]) await deleteBlob(b);
  const garbage = [lone, dropped.manifest, dropped.config, ...dropped.layers];
  const live = [kept.manifest, kept.config, ...kept.layers];

  // Within the grace nothing goes.
  const early = line(await scheduledRun(), 'garbage collection');
  // (Its candidates are young, or in a bucket younger than the grace and not even read.)
  expect(early).toMatchObject({ cron: CRON, deleted: 0, failed: 0 });
  for (const b of [...garbage, ...live]) expect(await stored(b), b.digest).toBe(true);

  const realNow = Date.now.bind(Date);
  vi.spyOn(Date, 'now').mockImplementation(() => realNow() + LATER_MS);
  const lines = await scheduledRun();
  const gc = line(lines, 'garbage collection');
  // A digest noted twice (stored, then unlinked) in two buckets is examined twice, deleted once.
  expect(gc).toMatchObject({ cron: CRON, dryRun: false, deleted: garbage.length, failed: 0 });
  expect(gc.examined).toBeGreaterThanOrEqual(garbage.length + live.length);
  expect(gc.referenced).toBeGreaterThanOrEqual(live.length);
  expect(gc.deletedBytes).toBe(garbage.reduce((n, b) => n + b.size, 0));
  expect(line(lines, 'reclaimed leftovers')).toMatchObject({ cron: CRON, uploads: { deleted: 0 }, fills: { deleted: 0 } });
  for (const b of garbage) expect(await stored(b), b.digest).toBe(false);
  for (const b of live) expect(await stored(b), b.digest).toBe(true);

  // What is referenced is no longer a candidate: the next run has nothing to look at.
  expect(line(await scheduledRun(), 'garbage collection')).toMatchObject({ examined: 0, deleted: 0 });
  vi.mocked(Date.now).mockRestore();

  // The image still pulls whole, by tag, its unlinked layer included (its manifest names it).
  const pulled = await request(`/v2/${repo}/manifests/kept`, { headers: { Accept: kept.manifest.mediaType } });
  expect(pulled.status).toBe(200);
  expect(pulled.headers.get('Docker-Content-Digest')).toBe(kept.manifest.digest);
  for (const b of [kept.config, kept.layers[1]!]) expect((await request(`/v2/${repo}/blobs/${b.digest}`)).status).toBe(200);
  expect((await request(`/v2/${repo}/manifests/${dropped.manifest.digest}`)).status).toBe(404);
});
