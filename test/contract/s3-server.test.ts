import {
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startS3, type S3Server } from '../support/s3-server.js';

/**
 * The S3 server the S3 adapter's tests run against (test/support/s3-server.ts: Ceph RGW on
 * loopback) does what those tests rely on: streamed PUTs, ranged GETs, conditional PUTs,
 * multipart uploads, presigned URLs, and real signature checks.
 */

let server: S3Server;
let s3: S3Client;
const bucket = `outpost-contract-${Date.now()}`;

function client(secretAccessKey: string): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

async function statusOf(promise: Promise<unknown>): Promise<number | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    if (error instanceof S3ServiceException) return error.$metadata.httpStatusCode;
    throw error;
  }
}

const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

beforeAll(async () => {
  // Generous: on a fresh machine this installs the Ceph packages first (about a minute).
  server = await startS3({ memstoreBytes: 512 * 1024 * 1024 });
  s3 = client(server.secretAccessKey);
  await s3.send(new CreateBucketCommand({ Bucket: bucket }));
}, 300_000);

afterAll(async () => {
  s3?.destroy();
  await server?.stop();
});

describe('S3 test server (Ceph RGW)', () => {
  const body = randomBytes(3 * 1024 * 1024 + 17);

  it('stores a streamed PUT with a declared Content-Length and serves it back', async () => {
    const chunks = Array.from({ length: Math.ceil(body.length / 65536) }, (_, i) => body.subarray(i * 65536, (i + 1) * 65536));
    await s3.send(
      new PutObjectCommand({ Bucket: bucket, Key: 'blobs/a', Body: Readable.from(chunks), ContentLength: body.length }),
    );

    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'blobs/a' }));
    expect(head.ContentLength).toBe(body.length);

    const whole = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'blobs/a' }));
    expect(sha256(await whole.Body!.transformToByteArray())).toBe(sha256(body));
  });

  it('serves a byte range', async () => {
    const ranged = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'blobs/a', Range: 'bytes=100-1123' }));
    expect(ranged.ContentLength).toBe(1024);
    expect(ranged.ContentRange).toBe(`bytes 100-1123/${body.length}`);
    expect(Buffer.from(await ranged.Body!.transformToByteArray())).toEqual(body.subarray(100, 1124));
  });

  it("refuses a PUT with If-None-Match: '*' on an existing key (412) and accepts it on a new one", async () => {
    const status = await statusOf(
      s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'blobs/a', Body: 'other', IfNoneMatch: '*' })),
    );
    expect(status).toBe(412);
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'blobs/a' }));
    expect(head.ContentLength).toBe(body.length);

    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'blobs/new', Body: 'fresh', IfNoneMatch: '*' }));
  });

  it('assembles a multipart upload of 5 MiB parts', async () => {
    const parts = [randomBytes(5 * 1024 * 1024), randomBytes(5 * 1024 * 1024), randomBytes(1234)];
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'blobs/multi' }));
    const etags: string[] = [];
    for (const [i, part] of parts.entries()) {
      const res = await s3.send(
        new UploadPartCommand({ Bucket: bucket, Key: 'blobs/multi', UploadId, PartNumber: i + 1, Body: part }),
      );
      etags.push(res.ETag!);
    }
    await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: 'blobs/multi',
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'blobs/multi' }));
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(Buffer.concat(parts)));
  });

  it('serves a presigned GET URL to a plain fetch, and refuses a tampered one', async () => {
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: bucket, Key: 'blobs/a' }), { expiresIn: 300 });
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(sha256(body));

    const tampered = new URL(url);
    tampered.searchParams.set('X-Amz-Signature', '0'.repeat(64));
    const refused = await fetch(tampered);
    expect(refused.status).toBe(403);
    await refused.arrayBuffer();
  });

  it('refuses requests signed with a wrong secret key (403)', async () => {
    const wrong = client('not-the-secret-key-0123456789abcdef0000');
    try {
      expect(await statusOf(wrong.send(new ListBucketsCommand({})))).toBe(403);
      expect(await statusOf(wrong.send(new HeadObjectCommand({ Bucket: bucket, Key: 'blobs/a' })))).toBe(403);
      expect(await statusOf(wrong.send(new PutObjectCommand({ Bucket: bucket, Key: 'blobs/x', Body: 'x' })))).toBe(403);
    } finally {
      wrong.destroy();
    }
  });

  it('deletes an object', async () => {
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'blobs/a' }));
    expect(await statusOf(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'blobs/a' })))).toBe(404);
  });
});
