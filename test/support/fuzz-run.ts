import { expect } from 'vitest';
import type { Hono } from 'hono';
import { ERRORS } from '../../src/core/errors.js';
import type { BlobStore } from '../../src/ports/blob-store.js';
import type { MetaIndex } from '../../src/ports/meta-index.js';
import { Journal, Rng, fuzzRequest, type FuzzRequest, type Known } from './fuzz.js';
import { EMPTY_CONFIG, blob, descriptor, image, index, type Blob } from './images.js';

/**
 * One fuzz run over an app (the test in test/http/fuzz.test.ts, and test/e2e/fuzz-cloud.test.ts
 * on S3 + DynamoDB): seeds known content, sends `iterations` seeded requests, and checks every
 * answer, that refusals change nothing stored, and that known content stays byte-identical.
 */

export const SEED = Number(process.env.FUZZ_SEED ?? 20261201);
/** Far longer than any request here takes; past it, a request is a hang. */
const HANG_MS = 5_000;

const WIRE_CODES = new Set<string>(Object.values(ERRORS).map((e) => e.code));
/** What a client's fault may be answered with (403: a write into a mirrored namespace). */
export const CLIENT_STATUSES: ReadonlySet<number> = new Set([400, 403, 404, 405, 413, 415, 416]);

export interface FuzzSubject {
  index: MetaIndex;
  store: BlobStore;
  /** The app over the journalled index. */
  app: (index: MetaIndex) => Hono;
  /** Repositories the generator aims at beyond the hosted ones. */
  names?: string[];
  /** Index partitions whose items may change on a refusal (coordination state, not content). */
  coordination?: RegExp;
  close?: () => void;
}

/**
 * Sends a fuzz request to `app` as a client would: undefined for a request no client could
 * send (a target that does not parse, a method or header bytes the fetch API refuses).
 */
export function sender(app: Hono): (r: FuzzRequest) => Promise<Response | undefined> {
  return async (r) => {
    let url: URL;
    try {
      url = new URL(r.target, 'http://outpost');
    } catch {
      return undefined; // a target no client could send
    }
    let request: Request;
    try {
      request = new Request(url, { method: r.method, headers: r.headers, body: r.body as BodyInit | undefined });
    } catch {
      return undefined; // a request the fetch API refuses to build (a forbidden method, bad header bytes)
    }
    // As @hono/node-server passes it: the target as sent, beside the resolved URL.
    return app.request(request, undefined, { incoming: { url: r.target } });
  };
}

export async function runFuzz(subject: FuzzSubject, iterations: number): Promise<void> {

    const journal = new Journal(subject.index, subject.store, subject.coordination);
    const app = subject.app(journal.journalled());
    const send = sender(app);

    const known = await seed(send);
    known.names.push(...(subject.names ?? []));
    const rng = new Rng(SEED);
    const failures: string[] = [];
    let refused = 0;
    const seen = new Map<string, number>();
    for (let i = 0; i < iterations && failures.length < 5; i++) {
      // A live upload with bytes in it, always: near misses aim at the newest.
      if (i % 50 === 0) known.uploads.push(await startUpload(send));
      const r = fuzzRequest(rng, known);
      const what = `#${i} (FUZZ_SEED=${SEED}) ${r.method} ${r.target.slice(0, 200)} ${JSON.stringify(r.headers).slice(0, 200)} body ${r.body?.byteLength ?? 'none'}`;
      await journal.start();
      const answer = await withDeadline(
        (async () => {
          const res = await send(r);
          return res && { res, text: await res.text() };
        })(),
      );
      if (answer === 'hang') {
        failures.push(`${what}: no answer within ${HANG_MS} ms`);
        continue;
      }
      if (!answer) continue;
      const { res, text } = answer;
      const problem = checkAnswer(r, res, text);
      if (problem) failures.push(`${what}: ${problem}`);
      if (res.status >= 400) {
        refused++;
        const changes = await journal.changes();
        if (changes.length > 0) failures.push(`${what}: refused with ${res.status} but changed ${changes.slice(0, 3).join('; ')}`);
      }
      learn(known, r, res);
      const kind = /\/(manifests|blobs\/uploads|blobs|tags|referrers)\b/.exec(r.target)?.[1] ?? 'other';
      const bucket = `${r.method} ${kind} ${res.status}`;
      seen.set(bucket, (seen.get(bucket) ?? 0) + 1);
    }
    if (process.env.FUZZ_VERBOSE) console.log([...seen].sort().map(([k, n]) => `${k}: ${n}`).join('\n'));
    expect(failures).toEqual([]);
    // The generator must reach the refusals it is for, and past them.
    expect(refused).toBeGreaterThan(iterations / 3);
    expect(refused).toBeLessThan(iterations);
    await expectKnownIntact(send, known);
    subject.close?.();
}

/** Pushes the content the fuzzer aims at: an image, an index, a referrer, an upload in progress. */
async function seed(send: (r: FuzzRequest) => Promise<Response | undefined>): Promise<Known & { blobs: Array<[string, Blob]> }> {
  const ok = async (r: FuzzRequest, status: number) => {
    const res = (await send(r))!;
    expect(res.status, `${r.method} ${r.target}: ${await res.clone().text()}`).toBe(status);
    return res;
  };
  const pushBlob = (name: string, b: Blob) =>
    ok({ method: 'POST', target: `/v2/${name}/blobs/uploads/?digest=${b.digest}`, headers: {}, body: b.bytes }, 201);
  const pushManifest = (name: string, ref: string, m: Blob) =>
    ok({ method: 'PUT', target: `/v2/${name}/manifests/${ref}`, headers: { 'Content-Type': m.mediaType }, body: m.bytes }, 201);

  const img = image({ layers: [3000, 20] });
  const arm = image({ layers: [100], arch: 'arm64' });
  const list = index([
    { manifest: img.manifest, arch: 'amd64' },
    { manifest: arm.manifest, arch: 'arm64' },
  ]);
  const referrer = blob(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.example.sig',
      config: descriptor(EMPTY_CONFIG),
      layers: [descriptor(EMPTY_CONFIG)],
      subject: descriptor(img.manifest),
      annotations: { 'org.example': 'x' },
    }),
    'application/vnd.oci.image.manifest.v1+json',
  );
  const blobs: Array<[string, Blob]> = [];
  for (const b of [img.config, ...img.layers, arm.config, ...arm.layers, EMPTY_CONFIG]) {
    await pushBlob('known/app', b);
    blobs.push(['known/app', b]);
  }
  const other = blob('only in other/repo');
  await pushBlob('other/repo', other);
  blobs.push(['other/repo', other]);
  await pushManifest('known/app', 'v1', img.manifest);
  await pushManifest('known/app', arm.manifest.digest, arm.manifest);
  await pushManifest('known/app', 'multi', list);
  await pushManifest('known/app', referrer.digest, referrer);
  for (const m of [img.manifest, arm.manifest, list, referrer]) blobs.push(['known/app', m]);

  return {
    names: ['known/app', 'other/repo', 'new/repo', 'known'],
    tags: ['v1', 'multi', 'latest', 'nope'],
    digests: [img.manifest.digest, arm.manifest.digest, list.digest, referrer.digest, ...img.layers.map((l) => l.digest), img.config.digest, other.digest],
    manifests: [img.manifest.bytes, list.bytes, referrer.bytes],
    uploads: [],
    blobs,
  };
}

/** An upload of known/app holding 10 bytes; its id. */
async function startUpload(send: (r: FuzzRequest) => Promise<Response | undefined>): Promise<string> {
  const started = (await send({ method: 'POST', target: '/v2/known/app/blobs/uploads/', headers: {} }))!;
  expect(started.status).toBe(202);
  const location = started.headers.get('location')!;
  const patched = (await send({ method: 'PATCH', target: location, headers: { 'Content-Range': '0-9' }, body: new Uint8Array(10) }))!;
  expect(patched.status).toBe(202);
  return location.split('/').pop()!;
}

/** What is wrong with an answer, if anything; `statuses` are the refusals a client's fault may get. */
export function checkAnswer(r: FuzzRequest, res: Response, text: string, statuses: ReadonlySet<number> = CLIENT_STATUSES): string | undefined {
  if (res.status >= 500) return `answered ${res.status}: ${text.slice(0, 300)}`;
  if (r.method === 'HEAD' && text !== '') return 'a HEAD answer has a body';
  if (res.status < 400) return undefined;
  if (!statuses.has(res.status)) return `answered ${res.status}, not a client-fault status`;
  if (r.method === 'HEAD') return undefined;
  if (!/^application\/json\b/.test(res.headers.get('content-type') ?? '')) return `error Content-Type ${res.headers.get('content-type')}`;
  if (res.headers.get('content-length') !== String(Buffer.byteLength(text))) return 'error Content-Length does not match its body';
  let body: { errors?: Array<{ code?: unknown; message?: unknown; detail?: unknown }> };
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    return `error body is not JSON: ${text.slice(0, 200)}`;
  }
  const e = body.errors?.[0];
  if (!e || Object.keys(body).join() !== 'errors' || Object.keys(e).sort().join() !== 'code,detail,message') return `not an OCI error body: ${text.slice(0, 200)}`;
  if (typeof e.code !== 'string' || !WIRE_CODES.has(e.code)) return `unknown error code ${String(e.code)}`;
  if (typeof e.message !== 'string' || e.message.length === 0) return 'error without a message';
  if (text.length > 8192) return `error body of ${text.length} characters echoes input`;
  return undefined;
}

/** Upload ids the registry handed out become targets of later requests. */
function learn(known: Known, r: FuzzRequest, res: Response): void {
  const location = res.headers.get('location');
  if (res.status === 202 && r.method === 'POST' && location?.includes('/blobs/uploads/')) known.uploads.push(location.split('/').pop()!);
}

/** Every blob and manifest pushed at the start is served byte-identical, unless a request that succeeded deleted it. */
async function expectKnownIntact(send: (r: FuzzRequest) => Promise<Response | undefined>, known: Known & { blobs: Array<[string, Blob]> }) {
  for (const [name, b] of known.blobs) {
    const isManifest = known.manifests.some((m) => Buffer.from(m).equals(b.bytes)) || b.mediaType.includes('manifest') || b.mediaType.includes('index');
    const res = (await send({ method: 'GET', target: `/v2/${name}/${isManifest ? 'manifests' : 'blobs'}/${b.digest}`, headers: {} }))!;
    const bytes = Buffer.from(await res.arrayBuffer());
    if (res.status === 404) continue; // deleted by a DELETE that was answered 202: gone, never corrupt
    expect(res.status, `${name} ${b.digest}`).toBe(200);
    expect(bytes.equals(b.bytes), `${name} ${b.digest} is byte-identical`).toBe(true);
  }
}

export function withDeadline<T>(work: Promise<T>): Promise<T | 'hang'> {
  let timer: NodeJS.Timeout;
  const deadline = new Promise<'hang'>((resolve) => (timer = setTimeout(() => resolve('hang'), HANG_MS)));
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
