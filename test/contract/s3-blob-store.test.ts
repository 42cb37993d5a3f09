import {
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { randomBytes, randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { createS3Client } from '../../src/adapters/s3/client.js';
import { S3BlobStore, planCompose, type S3BlobStoreOptions } from '../../src/adapters/s3/blob-store.js';
import { blobStoreLeftoversContract } from './blob-store-leftovers.contract.js';
import { blobStoreContract } from './blob-store.contract.js';

/**
 * The BlobStore contract against a real S3 implementation (Ceph's RADOS Gateway on loopback,
 * started by test/support/s3-global-setup.ts), which checks every signature. Small parts make
 * the multipart path run on contract-sized objects.
 */
const server = inject('s3');
const client = createS3Client({ ...server, forcePathStyle: true });
const bucket = `outpost-contract-${randomUUID().slice(0, 8)}`;
const PART = 5 * 1024 * 1024;

beforeAll(async () => {
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
});

function fixture(options: Partial<S3BlobStoreOptions> = {}) {
  const prefix = `${randomUUID()}/`;
  const store = new S3BlobStore({ client, bucket, prefix, partBytes: PART, ...options });
  return {
    store,
    prefix,
    // Multipart uploads left open would be bytes nobody can see but somebody pays for.
    leftovers: async () => {
      const out = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
      return (out.Uploads ?? []).map((u) => `${u.Key} (${u.UploadId})`);
    },
    // What a put killed after its first part leaves: an upload with a part and no completion.
    abandon: async (key: string) => {
      await abandonUpload(client, prefix + key, 1000);
    },
  };
}

/** Starts a multipart upload at `Key` and sends one part of `bytes` bytes (none for 0); returns its id. */
async function abandonUpload(s3: S3Client, Key: string, bytes: number): Promise<string> {
  const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key }));
  if (bytes > 0) await s3.send(new UploadPartCommand({ Bucket: bucket, Key, UploadId, PartNumber: 1, Body: randomBytes(bytes), ContentLength: bytes }));
  return UploadId!;
}

blobStoreContract('S3BlobStore on Ceph RGW', fixture, { streamsReads: true, reportsLastModified: true });
blobStoreLeftoversContract('S3BlobStore on Ceph RGW', fixture);

describe('S3BlobStore specifics', () => {
  it('writes an object of several parts through multipart, with unknown and with known size', async () => {
    const { store, leftovers } = fixture();
    const bytes = randomBytes(3 * PART + 12345);
    for (const size of [undefined, bytes.byteLength]) {
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          // Odd-sized chunks so that parts are cut across chunk boundaries.
          for (let at = 0; at < bytes.byteLength; at += 777_777) c.enqueue(bytes.subarray(at, at + 777_777));
          c.close();
        },
      });
      await store.put(`big-${size}`, body, size);
      const got = await store.get(`big-${size}`);
      expect(got?.size).toBe(bytes.byteLength);
      expect(Buffer.from(await new Response(got!.body).arrayBuffer()).equals(bytes)).toBe(true);
    }
    expect(await leftovers()).toEqual([]);
  });

  it('moves with a server-side copy', async () => {
    const { store } = fixture();
    await store.put('from', new Response('moved bytes').body!);
    await store.move('from', 'to');
    expect(await store.stat('from')).toBeUndefined();
    expect(await new Response((await store.get('to'))!.body).text()).toBe('moved bytes');
  });

  it("reads hand on the HTTP client's Buffers as they are (Readable.toWeb copied every chunk)", async () => {
    const { store } = fixture();
    const bytes = randomBytes(3 * 1024 * 1024);
    await store.put('read', new Response(bytes).body!, bytes.length);
    for (const range of [undefined, { offset: 1000, length: 2 * 1024 * 1024 }]) {
      const chunks: Uint8Array[] = [];
      for await (const chunk of (await store.get('read', range))!.body as unknown as AsyncIterable<Uint8Array>) chunks.push(chunk);
      expect(chunks.length).toBeGreaterThan(1);
      expect(chunks.every((c) => Buffer.isBuffer(c))).toBe(true);
      expect(Buffer.concat(chunks).equals(range ? bytes.subarray(1000, 1000 + range.length) : bytes)).toBe(true);
    }
    // A body given up half read lets its connection go, and the store goes on serving.
    const half = (await store.get('read'))!.body.getReader();
    await half.read();
    await half.cancel();
    expect(Buffer.from(await new Response((await store.get('read'))!.body).arrayBuffer()).equals(bytes)).toBe(true);
  });

  it('presigns GET URLs that the server honours, and only for that object', async () => {
    const { store } = fixture();
    await store.put('signed', new Response('through a presigned URL').body!);
    const url = await store.presignGet('signed', 60);
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('through a presigned URL');
    const forged = await fetch(url.replace('signed', 'other'));
    expect(forged.status).toBe(403);
  });

  it('treats a missing bucket as a failure, not as a missing object', async () => {
    const store = new S3BlobStore({ client, bucket: `no-such-bucket-${randomUUID().slice(0, 8)}` });
    await expect(store.get('anything')).rejects.toMatchObject({ name: 'NoSuchBucket' });
  });

  it('signs writes although their bodies go unhashed (UNSIGNED-PAYLOAD): a wrong secret is refused', async () => {
    const wrong = createS3Client({ ...server, secretAccessKey: 'not-the-secret', forcePathStyle: true });
    const sent: string[] = [];
    const watched = watchedClient(() => undefined);
    watched.middlewareStack.add(
      (next) => async (args) => {
        sent.push((args.request as { headers: Record<string, string> }).headers['x-amz-content-sha256'] ?? '');
        return next(args);
      },
      { step: 'finalizeRequest', name: 'seeSignedHeader' },
    );
    const store = new S3BlobStore({ client: wrong, bucket, prefix: `${randomUUID()}/`, partBytes: PART });
    await expect(store.put('refused', new Response('x').body!)).rejects.toMatchObject({ $metadata: { httpStatusCode: 403 } });
    await expect(store.put('refused-big', counted(randomBytes(PART + 1)).stream)).rejects.toMatchObject({ $metadata: { httpStatusCode: 403 } });
    await new S3BlobStore({ client: watched, bucket, prefix: `${randomUUID()}/` }).put('accepted', new Response('y').body!);
    expect(sent).toEqual(['UNSIGNED-PAYLOAD']);
    wrong.destroy();
    watched.destroy();
  });

  it('is refused with a wrong secret: signatures are really checked', async () => {
    const wrong = createS3Client({ ...server, secretAccessKey: 'not-the-secret', forcePathStyle: true });
    await expect(wrong.send(new GetObjectCommand({ Bucket: bucket, Key: 'anything' }))).rejects.toMatchObject({
      $metadata: { httpStatusCode: 403 },
    });
  });
});

/** A client of its own (so its middleware stays in one test) that reports every command it sends. */
function watchedClient(onSend: (command: string, input: Record<string, unknown>) => void | Promise<void>): S3Client {
  const watched = createS3Client({ ...server, forcePathStyle: true });
  watched.middlewareStack.add(
    (next, context) => async (args) => {
      await onSend(context.commandName ?? '', args.input as Record<string, unknown>);
      return next(args);
    },
    { step: 'initialize', name: 'watch' },
  );
  return watched;
}

/** Bytes of part buffers the store holds now and at most, as its onBuffer probe reports them. */
function bufferProbe() {
  const probe = {
    live: 0,
    peak: 0,
    onBuffer: (bytes: number) => {
      probe.live += bytes;
      probe.peak = Math.max(probe.peak, probe.live);
    },
  };
  return probe;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A body of `bytes` in chunks of 64 KiB; counts how many chunks the reader has pulled. */
function counted(bytes: Uint8Array) {
  const state = { pulled: 0, stream: undefined as unknown as ReadableStream<Uint8Array> };
  let at = 0;
  state.stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= bytes.length) return c.close();
      state.pulled++;
      c.enqueue(bytes.slice(at, (at += 65536)));
    },
  }, { highWaterMark: 0 }); // pulled only when read, not to fill a queue ahead
  return state;
}

describe('S3BlobStore part buffers', () => {
  it('never holds more than its budget across many concurrent puts, and all of them complete', async () => {
    const probe = bufferProbe();
    // Slow part uploads, so that puts pile up on the budget.
    const slow = watchedClient(async (command) => {
      if (command === 'UploadPartCommand') await sleep(30);
    });
    const budget = 2 * PART + PART / 2;
    const { store, leftovers } = fixture({ client: slow, bufferBudgetBytes: budget, partsInFlight: 4, onBuffer: probe.onBuffer });
    const values = Array.from({ length: 10 }, (_, i) => randomBytes(i % 3 === 0 ? 1000 + i : 2 * PART + 4321 * i));
    await Promise.all(values.map((v, i) => store.put(`many/${i}`, counted(v).stream, i % 2 ? v.length : undefined)));
    for (const [i, v] of values.entries()) {
      expect(Buffer.from(await new Response((await store.get(`many/${i}`))!.body).arrayBuffer()).equals(v), `many/${i}`).toBe(true);
    }
    expect(probe.peak).toBeGreaterThan(0);
    expect(probe.peak).toBeLessThanOrEqual(budget);
    // Idle again: every buffer let go.
    expect(probe.live).toBe(0);
    expect(await leftovers()).toEqual([]);
    slow.destroy();
  });

  it('makes progress with a budget of one part when many puts start at once', async () => {
    const probe = bufferProbe();
    const { store, leftovers } = fixture({ bufferBudgetBytes: PART, onBuffer: probe.onBuffer });
    const values = Array.from({ length: 6 }, (_, i) => randomBytes(PART + 1000 * i + 1));
    await Promise.all(values.map((v, i) => store.put(`one/${i}`, counted(v).stream, v.length)));
    for (const [i, v] of values.entries()) expect(await store.stat(`one/${i}`)).toMatchObject({ size: v.length });
    expect(probe.peak).toBeLessThanOrEqual(PART);
    expect(await leftovers()).toEqual([]);
  });

  it('holds back a put while the budget is spent: its body is not read until a buffer is free', async () => {
    const { store } = fixture({ bufferBudgetBytes: PART });
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let first = 0;
    // A body that stalls after 1 MiB, holding the only part buffer.
    const stalled = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (first === 16) await released;
        if (first++ >= 32) return c.close();
        c.enqueue(new Uint8Array(65536).fill(1));
      },
    });
    const a = store.put('held/a', stalled);
    await sleep(50);
    const body = counted(randomBytes(100_000));
    const b = store.put('held/b', body.stream);
    await sleep(200);
    expect(body.pulled, 'the second put waits for budget before reading').toBe(0);
    release();
    await Promise.all([a, b]);
    expect(body.pulled).toBeGreaterThan(0);
    expect(await store.stat('held/b')).toMatchObject({ size: 100_000 });
  });

  it('sizes buffers from the part size, never from a declared length', async () => {
    const probe = bufferProbe();
    const { store, leftovers } = fixture({ onBuffer: probe.onBuffer });
    const body = counted(randomBytes(PART + 12345));
    await expect(store.put('declared/huge', body.stream, 1e15)).rejects.toThrow(/short write/);
    expect(probe.peak).toBeLessThanOrEqual(2 * PART);
    expect(await store.stat('declared/huge')).toBeUndefined();
    expect(await leftovers()).toEqual([]);
  });

  it.each([
    ['1e15 bytes, a short body', 1e15, 1000],
    ['4e12 bytes, a short body', 4e12, 1000],
    ['4e12 bytes, an empty body', 4e12, 0],
    ['just below one part, a short body', PART - 1, 10],
  ])('fails a put declaring %s cleanly as a short write, holding at most one part buffer', async (_, declared, actual) => {
    const probe = bufferProbe();
    const { store, leftovers } = fixture({ onBuffer: probe.onBuffer });
    await expect(store.put('declared/short', counted(randomBytes(actual)).stream, declared)).rejects.toThrow(/short write/);
    expect(probe.peak).toBeGreaterThan(0);
    expect(probe.peak).toBeLessThanOrEqual(PART);
    expect(probe.live).toBe(0);
    expect(await store.stat('declared/short')).toBeUndefined();
    expect(await leftovers()).toEqual([]);
  });
});

describe('S3BlobStore reclaim', () => {
  it('aborts uploads untouched for longer than the grace, judged by their newest part, never a put still sending parts', async () => {
    const HOUR = 60 * 60 * 1000;
    const longAgo = new Date(Date.now() - 2 * HOUR);
    const aged = new Set<string>();
    // Ceph cannot be asked to backdate an upload, so this client reports every upload as
    // initiated two hours ago, and the parts of the `aged` ones as sent then.
    const watched = createS3Client({ ...server, forcePathStyle: true });
    watched.middlewareStack.add(
      (next, context) => async (args) => {
        const result = await next(args);
        const output = result.output as { Uploads?: Array<{ Initiated?: Date }>; Parts?: Array<{ LastModified?: Date }> };
        if (context.commandName === 'ListMultipartUploadsCommand') for (const u of output.Uploads ?? []) u.Initiated = longAgo;
        if (context.commandName === 'ListPartsCommand' && aged.has(String((args.input as { UploadId?: string }).UploadId))) {
          for (const p of output.Parts ?? []) p.LastModified = longAgo;
        }
        return result;
      },
      { step: 'initialize', name: 'backdate' },
    );
    const { store, leftovers, prefix } = fixture({ client: watched });
    aged.add(await abandonUpload(client, `${prefix}dead/with-part`, 1000));
    aged.add(await abandonUpload(client, `${prefix}dead/without-parts`, 0));
    const young = await abandonUpload(client, `${prefix}young/part`, 1000);

    // A put in progress: its upload looks two hours old, but its part was sent just now.
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const bytes = randomBytes(2 * PART + 10);
    let at = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (at >= PART + 1) await released;
        if (at >= bytes.length) return c.close();
        c.enqueue(bytes.slice(at, (at += PART + 1)));
      },
    });
    const putting = store.put('live/put', body, bytes.length);
    // Until its first part has been sent.
    for (;;) {
      const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: `${prefix}live/` }));
      const id = uploads.Uploads?.[0]?.UploadId;
      if (id && (await client.send(new ListPartsCommand({ Bucket: bucket, Key: `${prefix}live/put`, UploadId: id }))).Parts?.length) break;
      await sleep(20);
    }

    expect(await store.reclaim(HOUR)).toEqual({ temporary: 2, directories: 0 });
    const left = await leftovers();
    expect(left.some((u) => u.includes(young))).toBe(true);
    expect(left.some((u) => u.includes('live/put'))).toBe(true);
    expect(left.some((u) => u.includes('dead/'))).toBe(false);
    release();
    await putting;
    expect(Buffer.from(await new Response((await store.get('live/put'))!.body).arrayBuffer()).equals(bytes)).toBe(true);
    await sleep(1100);
    expect(await store.reclaim(0)).toEqual({ temporary: 1, directories: 0 });
    expect(await leftovers()).toEqual([]);
    watched.destroy();
  });
});

describe('S3BlobStore compose', () => {
  it('copies parts of 5 MiB and more server-side, reading back only the small ones', async () => {
    let readBack = 0;
    let uploaded = 0;
    const copies: string[] = [];
    const watched = watchedClient((command, input) => {
      if (command === 'GetObjectCommand') {
        const [from, to] = String(input.Range ?? '').replace('bytes=', '').split('-').map(Number);
        readBack += to! - from! + 1;
      }
      if (command === 'UploadPartCommand') uploaded += (input.Body as Uint8Array).byteLength;
      if (command === 'UploadPartCopyCommand' || command === 'CopyObjectCommand') copies.push(command);
    });
    const { store, leftovers } = fixture({ client: watched });
    const parts = [randomBytes(6 * PART / 5), randomBytes(PART), randomBytes(1234)];
    for (const [i, p] of parts.entries()) await store.put(`fills/x/${i}`, counted(p).stream, p.length);
    uploaded = 0;
    await store.compose(['fills/x/0', 'fills/x/1', 'fills/x/2'], 'blobs/x');
    expect(copies).toEqual(['UploadPartCopyCommand', 'UploadPartCopyCommand']);
    expect(readBack).toBe(1234);
    expect(uploaded).toBe(1234);
    const got = Buffer.from(await new Response((await store.get('blobs/x'))!.body).arrayBuffer());
    expect(got.equals(Buffer.concat(parts))).toBe(true);
    // One part is one CopyObject, whatever its size.
    copies.length = 0;
    await store.compose(['fills/x/2'], 'blobs/y');
    expect(copies).toEqual(['CopyObjectCommand']);
    expect(await leftovers()).toEqual([]);
    watched.destroy();
  });

  it('rejects a missing part with NoSuchKey before writing anything', async () => {
    const { store, leftovers } = fixture();
    await store.put('fills/y/0', new Response('abc').body!);
    await expect(store.compose(['fills/y/0', 'fills/y/1'], 'blobs/y')).rejects.toMatchObject({ name: 'NoSuchKey' });
    expect(await leftovers()).toEqual([]);
  });

  it('plans parts that S3 accepts: all but the last at least 5 MiB, none above 5 GiB, covering every byte in order', () => {
    const MiB = 1024 * 1024;
    const GiB = 1024 * MiB;
    const cases = [
      [],
      [0, 0],
      [1],
      [5 * MiB],
      [5 * MiB - 1, 1],
      [MiB, MiB, MiB, MiB, MiB, MiB],
      [MiB, 6 * MiB],
      [MiB, 5 * MiB],
      [4 * MiB, 2 * MiB, 9 * MiB, 0, 1],
      [12 * GiB + 3],
      [3 * MiB, 600 * MiB, 2],
      Array.from({ length: 1000 }, (_, i) => (i % 7) * MiB + i),
    ];
    for (const sizes of cases) {
      const sources = sizes.map((size, i) => ({ key: `p${i}`, size, etag: `"${i}"` }));
      const plan = planCompose(sources);
      const pieces = plan.flatMap((part) => ('copy' in part ? [part.copy] : part.upload));
      const lengths = plan.map((part) => ('copy' in part ? part.copy.length : part.size));
      lengths.slice(0, -1).forEach((n) => expect(n, JSON.stringify(sizes.slice(0, 8))).toBeGreaterThanOrEqual(5 * MiB));
      lengths.forEach((n) => expect(n).toBeLessThanOrEqual(5 * GiB));
      lengths.forEach((n) => expect(n).toBeGreaterThan(0));
      plan.forEach((part) => 'upload' in part && expect(part.size).toBeLessThanOrEqual(5 * MiB));
      // Pieces tile the non-empty sources, in order.
      const expected = sources.filter((s) => s.size > 0);
      let source = 0;
      let at = 0;
      for (const piece of pieces) {
        expect(piece.source).toBe(expected[source]);
        expect(piece.offset).toBe(at);
        at += piece.length;
        if (at === piece.source.size) (source++, (at = 0));
      }
      expect(at).toBe(0);
      expect(source).toBe(expected.length);
    }
  });
});

