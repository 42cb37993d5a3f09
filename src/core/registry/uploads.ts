import { OciError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { concatStreams, type ByteStream } from '../streams.js';
import type { Item, Json } from '../../ports/meta-index.js';
import { verifiedPut, type Blobs, type BlobInfo } from './blobs.js';
import type { Ctx } from './context.js';
import { keys, objects } from './keys.js';

/**
 * Blob uploads (spec.md#pushing-blobs). Upload state lives in the index and the bytes in the
 * store, never in process memory, so each request of one upload may reach another instance.
 *
 * Protocol:
 *   start:    putIfAbsent(upload/<id>, {name, size: 0, parts: []}, expires)
 *   append:   s = get(upload/<id>); require range start == s.size (else 416)
 *             put(uploads/<id>/<n>-<nonce>, body) while hashing it
 *             compareAndSet(upload/<id>, s.version, s + part)  -- lost race: delete our part, 416
 *   complete: s = get(upload/<id>); delete(upload/<id>, s.version) claims it (else 404)
 *             [append the final body as one more part]
 *             one part whose sha256 matches and store.move -> move it into place
 *             otherwise stream all parts through the verifier into content storage
 *             link into the repository; delete the parts
 *             on a digest or size mismatch the upload is cancelled, as Distribution does
 *   cancel:   delete(upload/<id>); delete its parts
 * Parts of uploads that expire or whose instance dies mid-way stay under uploads/<id>/, a
 * prefix of their own, for the garbage collector (or an S3 lifecycle rule) to remove.
 */

/**
 * Chunks one upload may have. Upload state is one index item that lists every part (about 200
 * bytes each), and DynamoDB caps an item at 400 KB; committing also reads each part once, one
 * store request each. Clients that need more send larger chunks.
 */
export const MAX_UPLOAD_PARTS = 1000;

/** Upload ids are UUIDs; anything else in the URL is an unknown upload, never an index key. */
const UPLOAD_ID = /^[A-Za-z0-9-]{1,64}$/;

interface Part {
  key: string;
  size: number;
  /** sha256 of this part alone: lets a single-part upload be committed without re-reading it. */
  sha256: string;
}

interface UploadState {
  name: string;
  size: number;
  parts: Part[];
  started: number;
}

export interface UploadStatus {
  id: string;
  name: string;
  /** Bytes received so far; the next chunk must start here. */
  size: number;
}

/** An inclusive byte range from a Content-Range header. */
export interface ChunkRange {
  start: number;
  end: number;
}

export class Uploads {
  constructor(
    private readonly ctx: Ctx,
    private readonly blobs: Blobs,
  ) {}

  get chunkMinLength(): number {
    return this.ctx.options.chunkMinLength;
  }

  async start(name: string): Promise<UploadStatus> {
    const id = crypto.randomUUID();
    const state: UploadState = { name, size: 0, parts: [], started: this.ctx.clock.now() };
    await this.ctx.index.putIfAbsent(keys.upload(id), state as unknown as Json, { expiresAt: this.expiry() });
    return { id, name, size: 0 };
  }

  async status(name: string, id: string): Promise<UploadStatus> {
    const { state } = await this.load(name, id);
    return { id, name, size: state.size };
  }

  /** Appends one chunk (PATCH). `range` is the Content-Range, when the client sent one. */
  async append(name: string, id: string, body: ByteStream | null, range?: ChunkRange, length?: number): Promise<UploadStatus> {
    const item = await this.load(name, id);
    const size = this.checkRange(id, item.state, range, length);
    if (!body && size) throw missingBody(size);
    if (!body) return { id, name, size: item.state.size };
    if (item.state.parts.length >= MAX_UPLOAD_PARTS) throw tooManyParts(id);
    const part = await this.writePart(id, item.state.parts.length, body, size);
    if (!part) return { id, name, size: item.state.size };
    const next: UploadState = { ...item.state, size: item.state.size + part.size, parts: [...item.state.parts, part] };
    const version = await this.ctx.index.compareAndSet(keys.upload(id), item.version, next as unknown as Json, {
      expiresAt: this.expiry(),
    });
    if (version === undefined) {
      // Another request appended (or completed) first: this chunk no longer starts at the end.
      await this.ctx.store.delete(part.key);
      throw this.rangeError(id, (await this.find(id))?.state.size ?? item.state.size);
    }
    return { id, name, size: next.size };
  }

  /** Completes the upload (PUT ?digest=), with an optional final chunk. */
  async complete(
    name: string,
    id: string,
    digest: Digest,
    body: ByteStream | null,
    range?: ChunkRange,
    length?: number,
  ): Promise<BlobInfo> {
    const item = await this.load(name, id);
    const size = this.checkRange(id, item.state, range, length);
    if (!body && size) throw missingBody(size);
    if (!(await this.ctx.index.delete(keys.upload(id), item.version))) {
      throw new OciError('BLOB_UPLOAD_UNKNOWN', 'upload changed or completed concurrently', { uploadId: id });
    }
    const parts = [...item.state.parts];
    try {
      if (parts.length === 0 && body) {
        // Nothing staged yet: stream the body straight into content storage, no copy.
        return await this.blobs.write(name, digest, body, size);
      }
      if (body) {
        if (parts.length >= MAX_UPLOAD_PARTS) throw tooManyParts(id);
        const last = await this.writePart(id, parts.length, body, size);
        if (last) parts.push(last);
      }
      return await this.commit(name, digest, parts);
    } finally {
      await this.deleteParts(parts);
    }
  }

  /** Cancels the upload; a chunk appended meanwhile is cancelled with it. */
  async cancel(name: string, id: string): Promise<void> {
    for (;;) {
      const item = await this.load(name, id);
      if (await this.ctx.index.delete(keys.upload(id), item.version)) {
        await this.deleteParts(item.state.parts);
        return;
      }
    }
  }

  private async commit(name: string, digest: Digest, parts: Part[]): Promise<BlobInfo> {
    const store = this.ctx.store;
    const only = parts.length === 1 ? parts[0] : undefined;
    if (only && store.move && digest.algorithm === 'sha256' && only.sha256 === digest.encoded) {
      await store.move(only.key, objects.content(digest));
      parts.length = 0;
      await this.blobs.link(name, digest.value, only.size);
      return { digest: digest.value, size: only.size };
    }
    const total = parts.reduce((n, p) => n + p.size, 0);
    const body = concatStreams(
      parts.map((p) => async () => {
        const object = await store.get(p.key);
        if (!object) throw new Error(`upload part ${p.key} vanished`);
        return object.body;
      }),
    );
    return this.blobs.write(name, digest, body, total, 'store');
  }

  private async writePart(id: string, n: number, body: ByteStream, size?: number): Promise<Part | undefined> {
    const key = objects.uploadPart(id, n);
    let written;
    try {
      written = await verifiedPut(this.ctx, key, body, { algorithm: 'sha256', size });
    } catch (err) {
      await this.ctx.store.delete(key).catch(() => undefined);
      throw err;
    }
    if (written.size === 0) {
      await this.ctx.store.delete(key);
      return undefined;
    }
    return { key, size: written.size, sha256: written.encoded };
  }

  /** Validates Content-Range / Content-Length against the upload; returns the expected chunk size if known. */
  private checkRange(id: string, state: UploadState, range?: ChunkRange, length?: number): number | undefined {
    if (range) {
      if (range.start !== state.size) throw this.rangeError(id, state.size);
      const declared = range.end - range.start + 1;
      if (length !== undefined && length !== declared) {
        throw new OciError('SIZE_INVALID', `Content-Length ${length} does not match Content-Range of ${declared} bytes`);
      }
      return declared;
    }
    return length;
  }

  private rangeError(id: string, size: number): OciError {
    return new OciError(
      'RANGE_INVALID',
      `chunk must start at offset ${size}`,
      { uploadId: id, offset: size },
      { Range: uploadRange(size), 'Docker-Upload-UUID': id },
    );
  }

  private async load(name: string, id: string): Promise<Item<UploadState & Json> & { state: UploadState }> {
    const found = await this.find(id);
    if (!found || found.state.name !== name) throw new OciError('BLOB_UPLOAD_UNKNOWN', undefined, { uploadId: id });
    return found;
  }

  private async find(id: string) {
    if (!UPLOAD_ID.test(id)) return undefined;
    const item = await this.ctx.index.get<UploadState & Json>(keys.upload(id));
    return item ? { ...item, state: item.value as UploadState } : undefined;
  }

  private async deleteParts(parts: Part[]): Promise<void> {
    await Promise.all(parts.map((p) => this.ctx.store.delete(p.key).catch(() => undefined)));
  }

  private expiry(): number {
    return this.ctx.clock.now() + this.ctx.options.uploadTtlMs;
  }
}

/** A request that declares bytes (Content-Range or Content-Length) but has no body, as an empty body would be refused. */
function missingBody(declared: number): OciError {
  return new OciError('SIZE_INVALID', `content is 0 bytes, declared ${declared}`, { declared, received: 0 });
}

function tooManyParts(id: string): OciError {
  return new OciError('BLOB_UPLOAD_INVALID', `an upload may have at most ${MAX_UPLOAD_PARTS} chunks; send larger chunks`, {
    uploadId: id,
    limit: MAX_UPLOAD_PARTS,
  });
}

/** The Range header of an upload holding `size` bytes: inclusive, "0-0" before any (as Distribution answers). */
export function uploadRange(size: number): string {
  return `0-${Math.max(0, size - 1)}`;
}
