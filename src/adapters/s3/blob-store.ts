import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
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
  type StoreReclaimReport,
} from '../../ports/blob-store.js';
import { MIN_PART_BYTES, PartBuffers, atEnd, fill, mapLimit, planCompose, type Piece, type Source } from './parts.js';
import { abortStaleUploads } from './reclaim.js';
import { isNodeReadable, webStreamOf } from '../node-readable.js';

export { planCompose } from './parts.js';

/**
 * BlobStore on any S3-compatible object store (AWS S3, R2's S3 API, Ceph RGW, MinIO).
 *
 * Writes never hold an object in memory and never `tee()` a stream: bytes are read into part
 * buffers; content that fits in one part is one PutObject, anything longer is a multipart
 * upload whose parts are sent as they fill, several at once while the next part is read (at
 * most `partsInFlight` buffers per write). Every part buffer comes from one budget per store
 * (PartBuffers below), shared by all its concurrent writes, so a burst of pushes waits for
 * memory instead of exhausting it. Every request body is a plain byte array, so no runtime
 * needs streaming request bodies, and the object becomes visible only when PutObject or
 * CompleteMultipartUpload succeeds, which happens only after the source stream has ended
 * cleanly (core's verifier releases the last bytes only once the digest matched).
 *
 * compose is server-side: UploadPartCopy per part, with only the parts below S3's minimum part
 * size read back through the store, a part buffer at a time.
 */

const MiB = 1024 * 1024;
const DEFAULT_PART_BYTES = 8 * MiB;
/**
 * Parts one write keeps in flight by default (being read into, or being sent). One part at a
 * time leaves the server idle while the next part is read and the last one acknowledged. Three
 * (24 MiB at 8 MiB parts) pushed a 1 GiB blob through workerd about as fast as four did, with a
 * peak RSS growth of 106 MiB instead of 124 MiB, too near the isolate's 128 MB (bench:cloud).
 */
const DEFAULT_PARTS_IN_FLIGHT = 3;
/**
 * What all part buffers of one store may hold together by default: two writes' worth of parts
 * in flight, well under a Workers isolate's 128 MB, so that concurrent fills and pushes in one
 * isolate wait for memory instead of exhausting it.
 */
const DEFAULT_BUFFER_BUDGET_BYTES = 48 * MiB;
/** S3's cap on parts per upload. */
const MAX_PARTS = 10_000;
/**
 * Parts beyond this number double in size every GROWTH_STEP parts (up to the budget), so an
 * object of any size fits 10,000 parts while part sizes never depend on a client's declared
 * length (a declared 1e15 bytes must not size a buffer).
 */
const GROWTH_AFTER_PARTS = 5_000;
const GROWTH_STEP = 1_000;
/** S3's limit for a single CopyObject; larger copies go part by part. */
const MAX_COPY_BYTES = 5 * 1024 * MiB;
/** HEAD requests compose sends at once to size its parts. */
const STAT_CONCURRENCY = 8;

export interface S3BlobStoreOptions {
  client: S3Client;
  bucket: string;
  /** Prepended to every key, e.g. "outpost/". */
  prefix?: string;
  /** Size of multipart parts and of the write buffers (default 8 MiB, at least 5 MiB). */
  partBytes?: number;
  /**
   * Parts one write (put or compose) keeps in flight: parts being sent, plus the one being read
   * while they are (default 3, at least 1). A put holds at most this many part buffers.
   */
  partsInFlight?: number;
  /**
   * Bytes all part buffers of this store may hold together, across concurrent writes (default
   * 48 MiB, at least one part). A write that finds the budget spent waits for it, which
   * applies backpressure to its source; it never allocates beyond it.
   */
  bufferBudgetBytes?: number;
  /** Told +n when a part buffer of n bytes is allocated and -n when it is let go (tests, metrics). */
  onBuffer?: (bytes: number) => void;
}

export class S3BlobStore implements BlobStore {
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly partBytes: number;
  private readonly partsInFlight: number;
  private readonly buffers: PartBuffers;

  constructor(options: S3BlobStoreOptions) {
    this.client = options.client;
    this.bucket = options.bucket;
    this.prefix = options.prefix ?? '';
    this.partBytes = Math.max(MIN_PART_BYTES, Math.floor(options.partBytes ?? DEFAULT_PART_BYTES));
    this.partsInFlight = Math.max(1, Math.floor(options.partsInFlight ?? DEFAULT_PARTS_IN_FLIGHT));
    const budget = Math.max(this.partBytes, Math.floor(options.bufferBudgetBytes ?? DEFAULT_BUFFER_BUDGET_BYTES));
    this.buffers = new PartBuffers(budget, this.partBytes, options.onBuffer);
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const head = await this.head(key);
    return head && { size: head.size, lastModified: head.lastModified };
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
      return { size: total, body: objectBody(out.Body!) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async put(key: string, body: ByteStream, size?: number): Promise<ObjectInfo> {
    const Key = this.prefix + key;
    const reader = body.getReader();
    // Small content declared to fit one part gets a buffer of its own size (manifests, configs).
    const small = size !== undefined && size < this.partBytes;
    let buffer: Uint8Array | undefined;
    let upload: Multipart | undefined;
    try {
      buffer = await this.buffers.take(small ? size : this.partBytes);
      let filled = await fill(reader, buffer);
      if (!filled.ended && size !== undefined && size <= buffer.byteLength) {
        if (!(await atEnd(reader))) throw new Error(`long write: more than the declared ${size} bytes`);
        filled = { bytes: filled.bytes, ended: true };
      }
      if (filled.ended) {
        const bytes = filled.bytes;
        if (size !== undefined && bytes.byteLength !== size) throw new Error(`short write: ${bytes.byteLength} of ${size} bytes`);
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: bytes, ContentLength: bytes.byteLength }));
        return { size: bytes.byteLength };
      }
      upload = new Multipart(this.client, this.bucket, Key);
      let total = 0;
      for (let PartNumber = 1; ; PartNumber++) {
        if (PartNumber > MAX_PARTS) throw new Error(`object too large: more than ${MAX_PARTS} parts`);
        const bytes = filled.bytes;
        total += bytes.byteLength;
        if (size !== undefined && total > size) throw new Error(`long write: more than the declared ${size} bytes`);
        const held = buffer;
        buffer = undefined;
        upload.upload(PartNumber, bytes, () => this.buffers.give(held));
        if (filled.ended) break;
        // At most partsInFlight buffers: the parts being sent and the one read next.
        await upload.slot(this.partsInFlight);
        buffer = await this.buffers.take(this.partSize(PartNumber + 1));
        filled = await fill(reader, buffer);
        if (filled.ended && filled.bytes.byteLength === 0) break;
      }
      if (size !== undefined && total !== size) throw new Error(`short write: ${total} of ${size} bytes`);
      await upload.complete();
      return { size: total };
    } catch (err) {
      await reader.cancel(err).catch(() => undefined);
      await upload?.abort();
      throw err;
    } finally {
      if (buffer) this.buffers.give(buffer);
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

  /** A server-side copy (compose of one part), then a delete of the source: the target appears whole or not at all. */
  async move(from: string, to: string): Promise<void> {
    await this.compose([from], to);
    await this.delete(from);
  }

  /**
   * Writes the concatenation of `parts` at `to` inside the store (see planCompose). Every part
   * is sized by a HEAD first, so a missing part rejects (NoSuchKey) before anything is written;
   * every copy and read then names the ETag the HEAD saw, so a part replaced meanwhile fails the
   * compose instead of mixing two versions. The result appears at `to` whole, by CopyObject,
   * PutObject or CompleteMultipartUpload; a failed multipart upload is aborted.
   */
  async compose(parts: string[], to: string): Promise<ObjectInfo> {
    const sources = await mapLimit(parts, STAT_CONCURRENCY, async (key) => {
      const head = await this.head(key);
      if (!head) throw new NoSuchKey({ message: `no object at ${key}`, $metadata: {} });
      return { key, ...head };
    });
    const size = sources.reduce((n, s) => n + s.size, 0);
    const Key = this.prefix + to;
    const filled = sources.filter((s) => s.size > 0);
    if (filled.length === 1 && size <= MAX_COPY_BYTES) {
      const [source] = filled as [Source];
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key, CopySource: this.copySource(source.key), CopySourceIfMatch: source.etag }));
      return { size };
    }
    const plan = planCompose(sources);
    if (plan.length <= 1 && !plan.some((part) => 'copy' in part)) {
      // Small content: one buffer of the concatenation, one PutObject.
      const buffer = await this.buffers.take(size);
      try {
        if (plan[0] && 'upload' in plan[0]) await this.readPieces(plan[0].upload, buffer);
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, Body: buffer, ContentLength: size }));
      } finally {
        this.buffers.give(buffer);
      }
      return { size };
    }
    if (plan.length > MAX_PARTS) throw new Error(`compose of ${plan.length} parts: more than S3's ${MAX_PARTS}`);
    const upload = new Multipart(this.client, this.bucket, Key);
    let buffer: Uint8Array | undefined;
    try {
      for (const [i, part] of plan.entries()) {
        const PartNumber = i + 1;
        await upload.slot(this.partsInFlight);
        if ('copy' in part) {
          const { source, offset, length } = part.copy;
          upload.send(PartNumber, async (UploadId) => {
            const out = await this.client.send(
              new UploadPartCopyCommand({
                Bucket: this.bucket,
                Key,
                UploadId,
                PartNumber,
                CopySource: this.copySource(source.key),
                CopySourceIfMatch: source.etag,
                CopySourceRange: `bytes=${offset}-${offset + length - 1}`,
              }),
            );
            return out.CopyPartResult!.ETag!;
          });
          continue;
        }
        buffer = await this.buffers.take(part.size);
        await this.readPieces(part.upload, buffer);
        const held = buffer;
        buffer = undefined;
        upload.upload(PartNumber, held, () => this.buffers.give(held));
      }
      await upload.complete();
      return { size };
    } catch (err) {
      await upload.abort();
      throw err;
    } finally {
      if (buffer) this.buffers.give(buffer);
    }
  }

  /**
   * Aborts the multipart uploads under the prefix that writes which died left open, once no
   * part has arrived for longer than `olderThanMs` (see reclaim.ts). S3 has no directories.
   */
  async reclaim(olderThanMs: number): Promise<StoreReclaimReport> {
    const temporary = await abortStaleUploads({ client: this.client, bucket: this.bucket, prefix: this.prefix }, olderThanMs);
    return { temporary, directories: 0 };
  }

  /** A time-limited URL that GETs the object straight from the store (optional ability). */
  async presignGet(key: string, expiresInSeconds: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }), { expiresIn: expiresInSeconds });
  }

  private async head(key: string): Promise<(ObjectInfo & { etag: string }) | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return { size: out.ContentLength ?? 0, lastModified: out.LastModified?.getTime(), etag: out.ETag! };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Reads the pieces, in order, into `buffer` (exactly their total size), each by a ranged GET of the version compose saw. */
  private async readPieces(pieces: Piece[], buffer: Uint8Array): Promise<void> {
    let at = 0;
    for (const { source, offset, length } of pieces) {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.prefix + source.key,
          IfMatch: source.etag,
          Range: `bytes=${offset}-${offset + length - 1}`,
        }),
      );
      const reader = objectBody(out.Body!).getReader();
      const got = await fill(reader, buffer.subarray(at, at + length));
      if (got.bytes.byteLength !== length || !(got.ended || (await atEnd(reader)))) {
        await reader.cancel().catch(() => undefined);
        throw new Error(`${source.key} changed while it was composed`);
      }
      at += length;
    }
  }

  private copySource(key: string): string {
    return encodeURI(`${this.bucket}/${this.prefix}${key}`);
  }

  /** partBytes, growing past GROWTH_AFTER_PARTS parts (see there), never beyond the budget. */
  private partSize(partNumber: number): number {
    if (partNumber <= GROWTH_AFTER_PARTS) return this.partBytes;
    const grown = this.partBytes * 2 ** Math.ceil((partNumber - GROWTH_AFTER_PARTS) / GROWTH_STEP);
    return Math.max(this.partBytes, Math.min(grown, this.buffers.budget, MAX_COPY_BYTES));
  }
}

/**
 * One multipart upload whose parts are sent concurrently. CreateMultipartUpload starts at once
 * and parts wait for its id, so reading the second part overlaps creating the upload. A part
 * that fails is remembered and rethrown by the next `slot` or by `complete`; `abort` waits for
 * the parts in flight before aborting, so no part lands in an aborted upload.
 */
class Multipart {
  private readonly id: Promise<string>;
  private readonly parts: Array<{ ETag: string; PartNumber: number }> = [];
  private readonly sending = new Set<Promise<void>>();
  private failure: { error: unknown } | undefined;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    private readonly key: string,
  ) {
    this.id = client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key })).then((out) => out.UploadId!);
    this.id.catch(() => undefined);
  }

  /** Sends part `PartNumber` with `request` (resolving to its ETag); `settled` runs once it has succeeded or failed. */
  send(PartNumber: number, request: (UploadId: string) => Promise<string>, settled?: () => void): void {
    const sent: Promise<void> = this.id
      .then(request)
      .then(
        (ETag) => {
          this.parts[PartNumber - 1] = { ETag, PartNumber };
        },
        (error: unknown) => {
          this.failure ??= { error };
        },
      )
      .finally(() => {
        this.sending.delete(sent);
        settled?.();
      });
    this.sending.add(sent);
  }

  /** Uploads `bytes` as part `PartNumber`; `settled` runs once it has succeeded or failed (the buffer may be reused). */
  upload(PartNumber: number, bytes: Uint8Array, settled: () => void): void {
    this.send(
      PartNumber,
      async (UploadId) =>
        (await this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key: this.key, UploadId, PartNumber, Body: bytes, ContentLength: bytes.byteLength }))).ETag!,
      settled,
    );
  }

  /** Waits until fewer than `limit` parts are in flight; throws if a part has failed. */
  async slot(limit: number): Promise<void> {
    while (this.sending.size >= limit && !this.failure) await Promise.race(this.sending);
    if (this.failure) throw this.failure.error;
  }

  async complete(): Promise<void> {
    await this.slot(1);
    await this.client.send(
      new CompleteMultipartUploadCommand({ Bucket: this.bucket, Key: this.key, UploadId: await this.id, MultipartUpload: { Parts: this.parts } }),
    );
  }

  async abort(): Promise<void> {
    await Promise.all(this.sending);
    const UploadId = await this.id.catch(() => undefined);
    if (UploadId === undefined) return;
    await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: this.key, UploadId })).catch(() => undefined);
  }
}

/**
 * An object's bytes as a web stream. On Node the SDK answers with node:http's IncomingMessage,
 * whose own web stream (Readable.toWeb) copies every chunk: its Buffers are passed on as they
 * are instead. On Workers the body already is a web stream.
 */
function objectBody(body: NonNullable<GetObjectCommandOutput['Body']>): ByteStream {
  return isNodeReadable(body) ? webStreamOf(body).stream : (body.transformToWebStream() as ByteStream);
}

/**
 * A missing object is a miss; a missing bucket is a failure (misconfiguration), never a miss.
 * GetObject names the two apart; HeadObject has no body, so its bare 404 counts as a miss.
 */
function isNotFound(err: unknown): boolean {
  const e = err as { name?: string };
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound';
}
