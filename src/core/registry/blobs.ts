import { OciError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { verify, type ByteStream, type VerifyExpectation } from '../streams.js';
import type { ObjectRange } from '../../ports/blob-store.js';
import type { Json } from '../../ports/meta-index.js';
import { addReference, noteCandidate, references, removeReference } from '../gc/references.js';
import type { Ctx } from './context.js';
import { gcPorts, storeContent } from './content.js';
import { keys, objects } from './keys.js';

/** A blob's link into a repository: its size, and the version of the reference it stands on. */
export interface BlobLink {
  size: number;
  /** Absent on links written before references existed, until the backfill (core/gc/backfill.ts) adds it. */
  ref?: number;
}

/** Rounds of read-then-write on one link item before giving up (each lost round is another writer's win). */
const LINK_ROUNDS = 8;

/**
 * Blobs of a repository: content lives once in the BlobStore under its digest; a repository
 * "has" a blob when the index holds a link for it (so pulling by digest from a repository
 * that never received the blob is a 404, as with Distribution).
 *
 * Link protocol (the references of core/gc/references.ts; one item at a time, no transactions):
 *   link:   w = addReference(d, link:<repo>:blob)        absent: the bytes are being collected
 *           putIfAbsent(blob#repo/d, { size, ref: w }), or CAS the existing link to { size, ref: w }
 *   unlink: l = get(blob#repo/d); delete(blob#repo/d at l's version); removeReference(d, link ref at l.ref)
 * The link item names the version of the reference it stands on, so an unlink takes away only
 * the making of the reference its link stood on: a link made again meanwhile (a new version of
 * the same reference, then a CAS of the item) keeps its own. A crash between the two steps of
 * either leaves a reference with no link: bytes kept longer, never lost (an unlink notes the digest
 * as a candidate first, and the run that visits it removes such a dangling reference once it is
 * older than REPAIR_AFTER_MS; so does a link's writer's, through prepareStore's candidate). A link therefore always
 * names stored bytes (no run deletes bytes a reference holds), and its size answers HEAD alone.
 * New bytes are stored inside a writer's hold (core/registry/content.ts) and linked before it
 * is released.
 *
 * Size cap (RegistryOptions.maxBlobBytes), checked here on every way in, before the store sees a byte:
 *   a declared length (Content-Length, Content-Range, the sum of an upload's parts) above it -> refused at once
 *   an undeclared length -> the body is cut off as it passes it, so the store's put fails and nothing is visible
 *   an upload's chunk -> `room` says what is left beside the bytes the upload already holds
 */

export interface BlobInfo {
  digest: string;
  size: number;
}

export interface BlobRead extends BlobInfo {
  body: ByteStream;
  /** The range served, when the request asked for one. */
  range?: ObjectRange;
}

export type RangeRequest = { start: number; end?: number } | { suffix: number };

export class Blobs {
  constructor(private readonly ctx: Ctx) {}

  /** The blob's size when the repository has it; a miss is undefined. */
  async stat(name: string, digest: Digest): Promise<BlobInfo | undefined> {
    // The link alone answers: it is written only after the bytes were verified and stored, with
    // their size, and bytes are never removed while a link points at them. That saves a store
    // round trip (an S3 HeadObject) on every HEAD, GET and manifest reference check.
    const link = await this.ctx.index.get<BlobLink & Json>(keys.blobLink(name, digest.value));
    return link ? { digest: digest.value, size: link.value.size } : undefined;
  }

  async read(name: string, digest: Digest, range?: RangeRequest): Promise<BlobRead> {
    const info = await this.stat(name, digest);
    if (!info) throw new OciError('BLOB_UNKNOWN', undefined, { digest: digest.value });
    const resolved = range ? resolveRange(range, info.size) : undefined;
    const object = await this.ctx.store.get(objects.content(digest), resolved);
    if (!object) throw new OciError('BLOB_UNKNOWN', undefined, { digest: digest.value });
    return { ...info, body: object.body, range: resolved };
  }

  /**
   * A URL the client may fetch the blob from directly, when redirects are enabled and the store
   * can presign; undefined means serve it. Throws BLOB_UNKNOWN like `read`.
   */
  async redirect(name: string, digest: Digest): Promise<string | undefined> {
    const { store, options } = this.ctx;
    if (options.redirectSeconds <= 0 || !store.presignGet) return undefined;
    if (!(await this.stat(name, digest))) throw new OciError('BLOB_UNKNOWN', undefined, { digest: digest.value });
    return store.presignGet(objects.content(digest), options.redirectSeconds);
  }

  /**
   * Streams `body` into content storage, verified against `digest` (and `size` when known)
   * before it becomes visible, then links it into the repository.
   */
  async write(name: string, digest: Digest, body: ByteStream, size?: number, source: 'client' | 'store' = 'client'): Promise<BlobInfo> {
    return storeContent(
      this.ctx,
      digest,
      () => this.store(digest, body, size, source),
      (info) => this.linkHeld(name, digest.value, info.size),
    );
  }

  /**
   * Streams `body` into content storage, verified before it becomes visible; links nothing.
   * Only inside a writer's hold (storeContent), which the caller keeps until its reference is made.
   */
  async store(digest: Digest, body: ByteStream, size?: number, source: 'client' | 'store' = 'client'): Promise<BlobInfo> {
    const result = await verifiedPut(this.ctx, objects.content(digest), body, {
      algorithm: digest.algorithm,
      encoded: digest.encoded,
      size,
      source,
    });
    return { digest: digest.value, size: result.size };
  }

  /**
   * Bytes an upload that holds `offset` bytes may still take under the size cap, checked before
   * a chunk is stored: throws when the chunk's declared length (`declared`, from Content-Length
   * or Content-Range) would take the upload past it. Pass the result to verifiedPut as `limit`,
   * which cuts off a chunk of undeclared length where the cap is reached.
   */
  room(offset: number, declared?: number): number {
    const max = this.ctx.options.maxBlobBytes;
    if (offset + (declared ?? 0) > max) throw blobTooLarge(max, declared === undefined ? { offset } : { offset, declared });
    return Math.max(0, max - offset);
  }

  /**
   * Makes stored bytes part of the repository. False when they are being collected (or gone): a
   * mount then uploads, a mirror fills again. Idempotent.
   */
  async link(name: string, digest: string, size: number): Promise<boolean> {
    const ref = await addReference(gcPorts(this.ctx), digest, references.blobLink(name));
    if (!ref.held) return false;
    await this.putLink(name, digest, { size, ref: ref.version });
    await this.noteRepository(name);
    return true;
  }

  /** `link` inside the writer's hold on the bytes, where the reference is always held. */
  async linkHeld(name: string, digest: string, size: number): Promise<void> {
    if (!(await this.link(name, digest, size))) throw new Error(`the reference to ${digest} was refused inside a writer's hold`);
  }

  /** Writes the link item standing on reference version `link.ref`, whatever link was there. */
  private async putLink(name: string, digest: string, link: BlobLink): Promise<void> {
    const key = keys.blobLink(name, digest);
    for (let round = 0; round < LINK_ROUNDS; round++) {
      if (await this.ctx.index.putIfAbsent(key, link as BlobLink & Json)) return;
      const found = await this.ctx.index.get<BlobLink & Json>(key);
      if (found && found.value.ref !== undefined && found.value.ref >= link.ref!) return;
      if (found && (await this.ctx.index.compareAndSet(key, found.version, link as BlobLink & Json)) !== undefined) return;
    }
    throw new Error(`the link of ${digest} in ${name} kept changing through ${LINK_ROUNDS} rounds`);
  }

  /** Lists the repository in the catalog. Idempotent. */
  async noteRepository(name: string): Promise<void> {
    await this.ctx.index.putIfAbsent(keys.repo(name), { created: this.ctx.clock.now() });
  }

  /** Removes the blob from the repository; the bytes stay until garbage collection finds nothing else holds them. */
  async delete(name: string, digest: Digest): Promise<void> {
    const key = keys.blobLink(name, digest.value);
    for (let round = 0; round < LINK_ROUNDS; round++) {
      const link = await this.ctx.index.get<BlobLink & Json>(key);
      if (!link) throw new OciError('BLOB_UNKNOWN', undefined, { digest: digest.value });
      // Noted first: a crash between the two steps below leaves a reference with no link, which
      // the run that visits the candidate finds dangling and removes (collect.ts).
      await noteCandidate(gcPorts(this.ctx), digest.value);
      // Only the link read: one made again meanwhile stands on a newer reference, which stays.
      if (!(await this.ctx.index.delete(key, link.version))) continue;
      // A link from before references has none of its own to take away (the backfill adds it).
      if (link.value.ref !== undefined) await removeReference(gcPorts(this.ctx), digest.value, references.blobLink(name), link.value.ref);
      return;
    }
    throw new Error(`the link of ${digest.value} in ${name} kept changing through ${LINK_ROUNDS} rounds`);
  }

  /**
   * Mounts a blob from repository `from` (spec.md#mounting-a-blob-from-another-repository).
   * Returns undefined when `from` does not have it; the client then uploads instead.
   */
  async mount(name: string, digest: Digest, from: string): Promise<BlobInfo | undefined> {
    const source = await this.stat(from, digest);
    if (!source || !(await this.link(name, digest.value, source.size))) return undefined;
    return { digest: digest.value, size: source.size };
  }
}

/** RFC 9110 byte ranges, one range only. Throws 416 with the size when unsatisfiable. */
export function resolveRange(range: RangeRequest, size: number): ObjectRange {
  const unsatisfiable = () =>
    new OciError('RANGE_NOT_SATISFIABLE', `range not satisfiable for a blob of ${size} bytes`, { size }, {
      'Content-Range': `bytes */${size}`,
    });
  if ('suffix' in range) {
    if (range.suffix === 0 || size === 0) throw unsatisfiable();
    const length = Math.min(range.suffix, size);
    return { offset: size - length, length };
  }
  if (range.start >= size) throw unsatisfiable();
  const end = Math.min(range.end ?? size - 1, size - 1);
  if (end < range.start) throw unsatisfiable();
  return { offset: range.start, length: end - range.start + 1 };
}

/**
 * Streams `body` through the verifier into the store at `key`. Content that fails
 * verification never becomes visible (the verifier withholds the last bytes), and the
 * verifier's reason, when it has one, is what the caller gets.
 *
 * At most `limit` bytes (default: the blob size cap; an upload's chunk passes Blobs.room): a
 * declared size above it is refused before the store is called, and a body of undeclared size
 * errors as soon as it passes it, so the store's put fails and nothing becomes visible.
 */
export async function verifiedPut(
  ctx: Ctx,
  key: string,
  body: ByteStream,
  expect: VerifyExpectation,
  limit: number = ctx.options.maxBlobBytes,
): Promise<{ size: number; encoded: string }> {
  const max = ctx.options.maxBlobBytes;
  if (expect.size !== undefined && expect.size > limit) throw blobTooLarge(max, { declared: expect.size });
  // A declared size is enforced by the verifier (more bytes than declared fail at once).
  const cut = expect.size === undefined ? cutOff(body, limit, () => blobTooLarge(max, {})) : undefined;
  const check = verify(ctx.hash, cut?.stream ?? body, expect);
  try {
    await ctx.store.put(key, check.stream, expect.size);
  } catch (err) {
    throw cut?.failure ?? check.failure ?? err;
  }
  return { size: check.result.size, encoded: check.result.encoded! };
}

/**
 * Content beyond the blob size cap. SIZE_INVALID for now; it is meant to be a kind of its own
 * with status 413 (the wire code stays SIZE_INVALID, as for a manifest over its cap).
 */
export function blobTooLarge(limit: number, detail: { declared?: number; offset?: number }): OciError {
  return new OciError('BLOB_TOO_LARGE', `blob is larger than this registry's limit of ${limit} bytes`, { limit, ...detail });
}

/**
 * `source` passed through until more than `limit` bytes have gone by; then the stream errors
 * with `tooLarge()`, recorded in `failure`, and the source is cancelled. Pulled one chunk at a
 * time, so it holds none.
 */
function cutOff(source: ByteStream, limit: number, tooLarge: () => OciError): { stream: ByteStream; readonly failure: OciError | undefined } {
  const reader = source.getReader();
  let seen = 0;
  let failure: OciError | undefined;
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        // A source that breaks off errors this stream with its own error, as if read directly.
        const next = await reader.read();
        if (next.done) return controller.close();
        seen += next.value.byteLength;
        if (seen > limit) {
          failure = tooLarge();
          controller.error(failure);
          await reader.cancel(failure).catch(() => undefined);
          return;
        }
        controller.enqueue(next.value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  return {
    stream,
    get failure() {
      return failure;
    },
  };
}
