import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import {
  MAX_LIST_KEYS,
  type BlobStore,
  type ByteStream,
  type ObjectBody,
  type ObjectInfo,
  type ObjectListOptions,
  type ObjectPage,
  type ObjectRange,
} from '../../ports/blob-store.js';

/**
 * BlobStore on any S3-compatible object store (AWS S3, R2's S3 API, Ceph RGW, MinIO).
 *
 * Writes never hold an object in memory and never `tee()` a stream: bytes are read into a
 * part buffer; content that fits in one part is one PutObject, anything longer is a multipart
 * upload whose parts are sent as they fill, with two buffers alternating so reading the next
 * part overlaps sending the last one. Memory per write is at most two parts. Every request body
 * is a plain byte array, so no runtime needs streaming request bodies, and the object becomes
 * visible only when PutObject or CompleteMultipartUpload succeeds, which happens only after the
 * source stream has ended cleanly (core's verifier releases the last bytes only once the digest
 * matched).
 */

/** S3's smallest part (all but the last), and the default part size: 2 x 8 MiB per write. */
const MIN_PART_BYTES = 5 * 1024 * 1024;
const DEFAULT_PART_BYTES = 8 * 1024 * 1024;
/** S3's cap on parts per upload; part size grows for objects known to be very large. */
const MAX_PARTS = 10_000;
/** S3's limit for a single CopyObject; larger objects are copied part by part. */
const MAX_COPY_BYTES = 5 * 1024 * 1024 * 1024;
const COPY_PART_BYTES = 512 * 1024 * 1024;

export interface S3BlobStoreOptions {
  client: S3Client;
  bucket: string;
  /** Prepended to every key, e.g. "outpost/". */
  prefix?: string;
  /** Size of multipart parts and of the write buffers (at least 5 MiB). */
  partBytes?: number;
}

export class S3BlobStore implements BlobStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly partBytes: number;

  constructor(options: S3BlobStoreOptions) {
    this.client = options.client;
    this.bucket = options.bucket;
    this.prefix = options.prefix ?? '';
    this.partBytes = Math.max(MIN_PART_BYTES, options.partBytes ?? DEFAULT_PART_BYTES);
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return { size: out.ContentLength ?? 0, lastModified: out.LastModified?.getTime() };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async get(key: string, range?: ObjectRange): Promise<ObjectBody | undefined> {
    if (range && range.length === 0) {
      const info = await this.stat(key);
      return info && { size: info.size, body: new ReadableStream({ start: (c) => c.close() }) };
    }
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.prefix + key,
          Range: range ? `bytes=${range.offset}-${range.offset + range.length - 1}` : undefined,
        }),
      );
      const total = out.ContentRange ? Number(out.ContentRange.split('/')[1]) : (out.ContentLength ?? 0);
      return { size: total, body: out.Body!.transformToWebStream() as ByteStream };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async put(key: string, body: ByteStream, size?: number): Promise<ObjectInfo> {
    const partBytes = size === undefined ? this.partBytes : Math.max(this.partBytes, Math.ceil(size / MAX_PARTS));
    const reader = body.getReader();
    // Small content known to fit one part gets a buffer of its own size (manifests, configs);
    // the second buffer exists only once the content turns out to need multipart.
    const first = new Uint8Array(size !== undefined && size < partBytes ? size : partBytes);
    const buffers = [first];
    let which = 0;
    let filled = await fill(reader, first);
    if (!filled.ended && size !== undefined && size <= first.byteLength) filled = { bytes: filled.bytes, ended: await atEnd(reader) };
    if (filled.ended) {
      const bytes = filled.bytes;
      if (size !== undefined && bytes.byteLength !== size) throw new Error(`short write: ${bytes.byteLength} of ${size} bytes`);
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Body: bytes, ContentLength: bytes.byteLength }),
      );
      return { size: bytes.byteLength };
    }
    const Key = this.prefix + key;
    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key }));
    const parts: Array<{ ETag: string; PartNumber: number }> = [];
    let total = 0;
    let sending: Promise<void> = Promise.resolve();
    try {
      for (;;) {
        const bytes = filled.bytes;
        const PartNumber = parts.length + 1;
        parts.push({ ETag: '', PartNumber });
        total += bytes.byteLength;
        await sending;
        sending = this.client
          .send(new UploadPartCommand({ Bucket: this.bucket, Key, UploadId, PartNumber, Body: bytes, ContentLength: bytes.byteLength }))
          .then((out) => {
            parts[PartNumber - 1]!.ETag = out.ETag!;
          });
        if (filled.ended) break;
        which ^= 1;
        buffers[which] ??= new Uint8Array(partBytes);
        filled = await fill(reader, buffers[which]!);
        if (filled.ended && filled.bytes.byteLength === 0) break;
      }
      await sending;
      if (size !== undefined && total !== size) throw new Error(`short write: ${total} of ${size} bytes`);
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts: parts } }),
      );
      return { size: total };
    } catch (err) {
      await sending.catch(() => undefined);
      await reader.cancel(err).catch(() => undefined);
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })).catch(() => undefined);
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
  }

  /**
   * One ListObjectsV2 request under the store's prefix. StartAfter rather than a continuation
   * token, so a page can start anywhere; S3 lists keys in UTF-8 byte order.
   */
  async list(prefix: string, options: ObjectListOptions): Promise<ObjectPage> {
    const out = await this.client.send(
      new ListObjectsV2Command({
        Bucket: this.bucket,
        Prefix: this.prefix + prefix,
        StartAfter: options.after === undefined ? undefined : this.prefix + options.after,
        MaxKeys: Math.min(Math.max(1, Math.floor(options.limit)), MAX_LIST_KEYS),
      }),
    );
    const keys = (out.Contents ?? []).map((o) => ({
      key: o.Key!.slice(this.prefix.length),
      size: o.Size ?? 0,
      lastModified: o.LastModified?.getTime(),
    }));
    return out.IsTruncated && keys.length > 0 ? { keys, next: keys[keys.length - 1]!.key } : { keys };
  }

  /** A server-side copy, then a delete of the source: the target appears whole or not at all. */
  async move(from: string, to: string): Promise<void> {
    const source = await this.stat(from);
    if (!source) throw new Error(`no object at ${from}`);
    const CopySource = encodeURI(`${this.bucket}/${this.prefix}${from}`);
    const Key = this.prefix + to;
    if (source.size <= MAX_COPY_BYTES) {
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key, CopySource }));
    } else {
      const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key }));
      try {
        const Parts = [];
        for (let offset = 0, PartNumber = 1; offset < source.size; offset += COPY_PART_BYTES, PartNumber++) {
          const end = Math.min(offset + COPY_PART_BYTES, source.size) - 1;
          const out = await this.client.send(
            new UploadPartCopyCommand({ Bucket: this.bucket, Key, UploadId, PartNumber, CopySource, CopySourceRange: `bytes=${offset}-${end}` }),
          );
          Parts.push({ ETag: out.CopyPartResult!.ETag!, PartNumber });
        }
        await this.client.send(new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId, MultipartUpload: { Parts } }));
      } catch (err) {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId })).catch(() => undefined);
        throw err;
      }
    }
    await this.delete(from);
  }

  /** A time-limited URL that GETs the object straight from the store (optional ability). */
  async presignGet(key: string, expiresInSeconds: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }), { expiresIn: expiresInSeconds });
  }
}

/**
 * Reads from `reader` into `buffer` until it is full or the stream ends. Chunks that straddle
 * the end of the buffer are split; the remainder is kept for the next fill.
 */
async function fill(reader: ReadableStreamDefaultReader<Uint8Array>, buffer: Uint8Array): Promise<{ bytes: Uint8Array; ended: boolean }> {
  const state = carry.get(reader);
  let at = 0;
  if (state) {
    const n = Math.min(state.byteLength, buffer.byteLength);
    buffer.set(state.subarray(0, n), 0);
    at = n;
    if (n < state.byteLength) carry.set(reader, state.subarray(n));
    else carry.delete(reader);
    if (at === buffer.byteLength) return { bytes: buffer, ended: false };
  }
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { bytes: buffer.subarray(0, at), ended: true };
    const n = Math.min(value.byteLength, buffer.byteLength - at);
    buffer.set(value.subarray(0, n), at);
    at += n;
    if (n < value.byteLength) carry.set(reader, value.subarray(n));
    if (at === buffer.byteLength) return { bytes: buffer, ended: false };
  }
}

/**
 * Whether the stream has ended, for a buffer that filled exactly: reads once more, keeping
 * anything that arrives for the next fill (a body longer than declared then fails the size check).
 */
async function atEnd(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<boolean> {
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return true;
    if (value.byteLength > 0) {
      carry.set(reader, value);
      return false;
    }
  }
}

/** Bytes read past the end of a part buffer, per reader, until the next fill. */
const carry = new WeakMap<ReadableStreamDefaultReader<Uint8Array>, Uint8Array>();

/**
 * A missing object is a miss; a missing bucket is a failure (misconfiguration), never a miss.
 * GetObject names the two apart; HeadObject has no body, so its bare 404 counts as a miss.
 */
function isNotFound(err: unknown): boolean {
  const e = err as { name?: string };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound';
}
