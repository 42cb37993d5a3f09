import { CreateBucketCommand, GetObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { randomBytes, randomUUID } from 'node:crypto';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { createS3Client } from '../../src/adapters/s3/client.js';
import { S3BlobStore } from '../../src/adapters/s3/blob-store.js';
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

function fixture() {
  const prefix = `${randomUUID()}/`;
  const store = new S3BlobStore({ client, bucket, prefix, partBytes: PART });
  return {
    store,
    // Multipart uploads left open would be bytes nobody can see but somebody pays for.
    leftovers: async () => {
      const out = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
      return (out.Uploads ?? []).map((u) => `${u.Key} (${u.UploadId})`);
    },
  };
}

blobStoreContract('S3BlobStore on Ceph RGW', fixture, { streamsReads: true, reportsLastModified: true });

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

  it('is refused with a wrong secret: signatures are really checked', async () => {
    const wrong = createS3Client({ ...server, secretAccessKey: 'not-the-secret', forcePathStyle: true });
    await expect(wrong.send(new GetObjectCommand({ Bucket: bucket, Key: 'anything' }))).rejects.toMatchObject({
      $metadata: { httpStatusCode: 403 },
    });
  });
});
