import { OciError, isOciError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { concatStreams, discard, streamOf, type ByteStream } from '../streams.js';
import { verifiedPut, type Blobs, type BlobInfo } from './blobs.js';
import { storeContent } from './content.js';
import type { Ctx } from './context.js';
import { objects } from './keys.js';
import { newNonce, nonEmpty, UploadItems, type Claim, type Loaded, type Part, type StoredPart, type UploadState } from './upload-items.js';

/**
 * Blob uploads (spec.md#pushing-blobs). Upload state lives in the index and the bytes in the
 * store, never in process memory, so each request of one upload may reach another instance.
 *
 * Items (keys.ts): the state upload/<id> -> {name, size, count, until}, and one item per slot
 * upload#<id>/<n>: the part of chunk n {nonce, offset, size, sha256 (chunk 0 only)}, whose bytes
 * are the object uploads/<id>/<n>-<nonce>, or a commit's claim {nonce, commit}. No item lists
 * the parts: a chunk writes one part item and one state update, each a few dozen bytes, so the
 * index takes O(n) bytes for n chunks, not O(n^2).
 *
 *   start:    putIfAbsent(upload/<id>, {name, size: 0, count: 0, until: now + lifetime})
 *   current:  s = get(upload/<id>)                      absent, expired, another repository's: 404
 *             while slot s.count holds a part p:         roll forward (an append stopped between its writes)
 *               compareAndSet(upload/<id>, s.version, s + p)   lost: re-read
 *   append:   s = current; range start must be s.size (else 416); no bytes: answer s, write nothing
 *             s.count == MAX_UPLOAD_PARTS: 400
 *             put(uploads/<id>/<c>-<nonce>, body) while hashing it             c = s.count
 *             putIfAbsent(slot c, {nonce, offset: s.size, size})               THE APPEND'S COMMIT POINT
 *               the slot holds another nonce: delete our object; 416 at the offset now (404 if gone)
 *             compareAndSet(upload/<id>, s.version, s + part)                  and extend the expiry
 *               changed: re-read; count > c: done; the state is gone: delete our object, 404
 *   complete: s = current; check the range; parts = the part items below s.count
 *             stream the parts and the PUT's body through the verifier into blobs/<digest>
 *               [one part, no body, sha256 = digest, store.move: nothing to do yet]
 *             putIfAbsent(slot s.count, {nonce, commit}, expires in COMMIT_CLAIM_MS)   THE CLAIM
 *               the slot holds a part: 416 with the new Range; another claim: 404
 *             [move the one part into blobs/<digest>, unless the content is there already]
 *             link into the repository
 *             delete(upload/<id>, s.version)                                   THE COMMIT POINT
 *               any failure before it: [copy a moved part back], delete our claim, rethrow
 *             delete the parts' objects (their items expire at `until`)
 *   cancel:   delete(upload/<id>); delete the objects of its part items
 *
 * Why a crash or a lost reply between any two steps is safe:
 *   - Object written, no part item: an orphan that nothing names (only the slot's nonce makes an
 *     object a part); the PATCH can be sent again. reclaimUploads removes it with the upload.
 *   - Part item written, state not advanced: the chunk is in. The next request rolls the state
 *     forward; a client that retries the PATCH gets 416 with a Range that includes it.
 *   - A putIfAbsent whose reply was lost (an adapter's retry then answers false) is known by its
 *     nonce; a compareAndSet whose reply was lost is re-read (count > c: it landed).
 *   - Any failure before the claim changes nothing in the upload: at most the content object is
 *     stored, verified, and linked by nothing. The PUT's body is never stored as a part, so a
 *     failed PUT leaves none of it behind.
 *   - Claimed, then a crash: appends get 416 and other completes 404 until the claim expires;
 *     then the upload is as it was. A single part already moved is found at blobs/<digest>
 *     (the retry skips the move; streaming reads it from there).
 *   - After the commit point the parts are garbage: a crash before their deletion leaves them
 *     to reclaimUploads, which deletes parts only of uploads whose state is gone.
 *
 * Concurrency. Whoever takes slot s.count first wins, and everything else follows from that:
 *   - Two appends at one offset: one takes the slot; the other deletes its object and gets 416.
 *   - An append and a complete: an append that takes the slot first makes the complete's view
 *     stale, so the complete answers 416 with the new Range and links nothing (as if it had come
 *     after the append). A complete that claims first links; the append gets 416, or 404 once the
 *     commit point has passed, and its object is deleted.
 *   - Two completes: both may verify and store the content (the same bytes; puts are atomic);
 *     one takes the claim and answers 201, the other 404. Only the claim holder deletes the state
 *     and then the parts, once.
 *   - Nothing visible is ever partial: a blob is linked only after its bytes were verified
 *     against the digest. A claim outlived by a paused commit lets the upload go on without it;
 *     the stale commit then links verified content and, its delete refused, cleans up nothing.
 *
 * A failed commit (a digest or size mismatch, a store or index error) leaves the upload as it
 * was, so that the client can fix or retry its last request. Distribution cancels the upload on
 * any commit error (registry/handlers/blobupload.go, PutBlobUploadComplete); Outpost keeps it,
 * because losing a whole upload to one refused or failed request is what issue 7 reported. A
 * client that wants it gone DELETEs it, or lets it expire.
 *
 * Expiry. The state expires uploadTtlMs after the last chunk, never later than `until`
 * (MAX_UPLOAD_AGE_MS after the start), and every part item is written to expire at `until`. So
 * a part item always outlives the state that counts it, however often appends extend the state,
 * and needs no renewal; items of finished uploads expire by themselves.
 */

/**
 * Chunks one upload may have (the PUT's final body is not one). Committing opens each part in
 * turn, one store request each, so this bounds the work of one commit request (a thousand
 * sequential reads: seconds on S3) and keeps an upload's part items within one index page
 * (MAX_LIST_LIMIT). No item size depends on it any more. Clients that need more send larger chunks.
 */
export const MAX_UPLOAD_PARTS = 1000;

/**
 * An upload is forgotten this long after it started, however active (or uploadTtlMs, when that is
 * longer): it is the fixed expiry of its part items. Distribution purges uploads by their age
 * too (storage.maintenance.uploadpurging, 168 h by default).
 */
export const MAX_UPLOAD_AGE_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * How long a commit's claim keeps other requests off the upload. It covers moving one part into
 * place (a server-side copy on S3) and linking; the verification, the long part, runs before the
 * claim. After a crash the upload is usable again once it expires.
 */
export const COMMIT_CLAIM_MS = 10 * 60 * 1000;

/** Times a commit tries to claim a slot that keeps emptying (claims of failed commits given back). */
const CLAIM_ATTEMPTS = 3;

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
  private readonly items: UploadItems;

  constructor(
    private readonly ctx: Ctx,
    private readonly blobs: Blobs,
  ) {
    this.items = new UploadItems(ctx);
  }

  get chunkMinLength(): number {
    return this.ctx.options.chunkMinLength;
  }

  async start(name: string): Promise<UploadStatus> {
    const id = crypto.randomUUID();
    const lifetime = Math.max(MAX_UPLOAD_AGE_MS, this.ctx.options.uploadTtlMs);
    await this.items.create(id, { name, size: 0, count: 0, until: this.ctx.clock.now() + lifetime });
    return { id, name, size: 0 };
  }

  async status(name: string, id: string): Promise<UploadStatus> {
    const { state } = await this.items.current(name, id);
    return { id, name, size: state.size };
  }

  /** Appends one chunk (PATCH). `range` is the Content-Range, when the client sent one. */
  async append(name: string, id: string, body: ByteStream | null, range?: ChunkRange, length?: number): Promise<UploadStatus> {
    const s = await this.items.current(name, id);
    const declared = this.checkRange(id, s.state, range, length);
    const room = this.blobs.room(s.state.size, declared);
    const chunk = await nonEmpty(body);
    if (!chunk) {
      if (declared) throw missingBody(declared);
      return { id, name, size: s.state.size };
    }
    if (s.state.count >= MAX_UPLOAD_PARTS) {
      await discard(chunk);
      throw tooManyParts(id);
    }
    const slot = s.state.count;
    const nonce = newNonce();
    const key = objects.uploadPart(id, slot, nonce);
    const written = await this.putPart(key, chunk, declared, room);
    const part: Part = { nonce, offset: s.state.size, size: written.size };
    if (slot === 0) part.sha256 = written.encoded;
    if (!(await this.items.takeSlot(id, slot, part, s.state.until))) {
      await this.ctx.store.delete(key).catch(() => undefined);
      throw this.rangeError(id, (await this.items.current(name, id)).state.size);
    }
    if (!(await this.items.record(name, id, s, part))) {
      // Cancelled or expired meanwhile: the chunk goes with the upload.
      await this.ctx.store.delete(key).catch(() => undefined);
      throw unknownUpload(id);
    }
    return { id, name, size: part.offset + part.size };
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
    const s = await this.items.current(name, id);
    const declared = this.checkRange(id, s.state, range, length);
    this.blobs.room(s.state.size, declared);
    const chunk = await nonEmpty(body);
    if (!chunk && declared) throw missingBody(declared);
    try {
      return await this.commit(name, id, s, digest, chunk, declared);
    } catch (err) {
      await discard(chunk);
      throw await this.explain(err, id);
    }
  }

  /** Cancels the upload; a chunk appended meanwhile is cancelled with it. */
  async cancel(name: string, id: string): Promise<void> {
    await this.items.load(name, id);
    // False when the state went meanwhile: a concurrent cancel or commit, or our own delete
    // retried by the adapter after a lost reply. Gone either way, so its parts go too.
    if (!(await this.items.remove(id)) && (await this.items.find(id)) !== undefined) throw unknownUpload(id);
    await this.deleteObjects((await this.items.allParts(id)).map((p) => p.key));
  }

  private async commit(name: string, id: string, s: Loaded, digest: Digest, chunk: ByteStream | null, declared?: number): Promise<BlobInfo> {
    const parts = await this.items.parts(id, s.state.count);
    const only = !chunk && parts.length === 1 ? parts[0]! : undefined;
    const movable = only && this.ctx.store.move && digest.algorithm === 'sha256' && only.sha256 === digest.encoded ? only : undefined;
    // The bytes land at the content key inside a writer's hold, and are linked before it ends.
    const { info, ended } = await storeContent(this.ctx, digest, async () => {
      // Verification first: the long step, and it changes nothing in the upload.
      const info = movable ? { digest: digest.value, size: movable.size } : await this.assemble(digest, parts, chunk, declared);
      const claim = await this.claim(name, id, s.state);
      let moved = false;
      try {
        if (movable) moved = await this.moveIntoPlace(movable, digest);
        await this.blobs.linkHeld(name, digest.value, info.size);
        return { info, ended: await this.items.end(id, s.version) };
      } catch (err) {
        if (moved) await this.restorePart(movable!, digest).catch(() => undefined);
        await this.items.release(id, s.state.count, claim).catch(() => undefined);
        throw err;
      }
    });
    // Not ended: another request ended it first (a retry of this PUT), and removes the parts.
    if (!ended) return info;
    await this.deleteObjects(parts.map((p) => p.key));
    return info;
  }

  /** Streams the parts, then the final chunk, through the verifier into content storage; links nothing. */
  private assemble(digest: Digest, parts: StoredPart[], chunk: ByteStream | null, declared?: number): Promise<BlobInfo> {
    const last = declared ?? (chunk ? undefined : 0);
    if (parts.length === 0) return this.blobs.store(digest, chunk ?? streamOf(new Uint8Array(0)), last);
    const total = last === undefined ? undefined : parts.reduce((n, p) => n + p.size, 0) + last;
    const open = parts.map((p) => () => this.openPart(p));
    if (chunk) open.push(async () => chunk);
    return this.blobs.store(digest, concatStreams(open), total, 'store');
  }

  private async openPart(part: StoredPart): Promise<ByteStream> {
    const object = (await this.ctx.store.get(part.key)) ?? (part.sha256 ? await this.ctx.store.get(movedTo(part.sha256)) : undefined);
    if (!object) throw new Error(`upload part ${part.key} vanished`);
    return object.body;
  }

  /** Takes the slot after the last part, so that no append and no other commit can proceed. */
  private async claim(name: string, id: string, state: UploadState): Promise<Claim> {
    const claim: Claim = { nonce: newNonce(), commit: true };
    const expiresAt = Math.min(this.ctx.clock.now() + COMMIT_CLAIM_MS, state.until);
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      if (await this.items.takeSlot(id, state.count, claim, expiresAt)) return claim;
      if (await this.items.partAt(id, state.count)) {
        // An append got there first: this PUT was verified against what the upload no longer is.
        throw this.rangeError(id, (await this.items.current(name, id)).state.size);
      }
      // Empty again: another commit's claim, released when it failed; the upload is alive, so try again.
      if (!(await this.items.slotTaken(id, state.count))) continue;
      throw unknownUpload(id, 'the upload is being completed by another request');
    }
    throw unknownUpload(id, 'the upload is being completed by another request');
  }

  /** Moves the one part into place; false when the content is there already (another push, or a commit that died after its move). */
  private async moveIntoPlace(part: StoredPart, digest: Digest): Promise<boolean> {
    const target = objects.content(digest);
    if (await this.ctx.store.stat(target)) return false;
    await this.ctx.store.move!(part.key, target);
    return true;
  }

  /** Puts a moved part back where it was, from the content it became (a failed commit leaves the upload as it was). */
  private async restorePart(part: StoredPart, digest: Digest): Promise<void> {
    const object = await this.ctx.store.get(objects.content(digest));
    if (!object) return;
    await verifiedPut(this.ctx, part.key, object.body, { algorithm: 'sha256', encoded: part.sha256, size: part.size, source: 'store' });
  }

  /** Stores one chunk, hashed and measured, cut off at `room` (the size cap less what the upload holds). */
  private async putPart(key: string, body: ByteStream, size: number | undefined, room: number): Promise<{ size: number; encoded: string }> {
    try {
      return await verifiedPut(this.ctx, key, body, { algorithm: 'sha256', size }, room);
    } catch (err) {
      await this.ctx.store.delete(key).catch(() => undefined);
      throw err;
    }
  }

  /** A store failure while another request cancelled or completed the upload is that, not a server fault. */
  private async explain(err: unknown, id: string): Promise<unknown> {
    if (isOciError(err)) return err;
    const found = await this.items.find(id).catch(() => 'unknown');
    return found === undefined ? unknownUpload(id, 'the upload was cancelled or completed meanwhile') : err;
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

  private async deleteObjects(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += DELETE_CONCURRENCY) {
      await Promise.all(keys.slice(i, i + DELETE_CONCURRENCY).map((key) => this.ctx.store.delete(key).catch(() => undefined)));
    }
  }
}

/** Where chunk 0 is when a commit moved it into place and then failed or died: its content object. */
function movedTo(sha256: string): string {
  return objects.content({ algorithm: 'sha256', encoded: sha256, value: `sha256:${sha256}` });
}

/** Store deletes in flight at once when a finished upload's parts are removed. */
const DELETE_CONCURRENCY = 16;

function unknownUpload(id: string, message?: string): OciError {
  return new OciError('BLOB_UPLOAD_UNKNOWN', message, { uploadId: id });
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
