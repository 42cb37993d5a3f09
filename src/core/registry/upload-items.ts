import { OciError } from '../errors.js';
import type { ByteStream } from '../streams.js';
import { MAX_LIST_LIMIT, type Json } from '../../ports/meta-index.js';
import type { Ctx } from './context.js';
import { keys, objects } from './keys.js';

/**
 * The index items of one blob upload and the single-item writes that move them: the state and
 * its slots. The protocol that composes them is written at the top of uploads.ts.
 */

/** The state item, upload/<id>. Its size never depends on the number of chunks. */
export interface UploadState {
  name: string;
  /** Bytes in chunks [0, count). */
  size: number;
  /** Chunks recorded; the next one goes to slot `count`. */
  count: number;
  /** Epoch ms: the upload's end at the latest, and the expiry of every part item. */
  until: number;
}

/** Slot n holding chunk n: its bytes are the object uploads/<id>/<n>-<nonce>. */
export interface Part {
  nonce: string;
  /** Where the chunk starts in the blob: the state's size when it was appended. */
  offset: number;
  size: number;
  /** Chunk 0 only: lets a single-chunk upload be moved into place without reading it again. */
  sha256?: string;
}

/** A commit's claim on the slot after the last part: no append and no other commit takes it. */
export interface Claim {
  nonce: string;
  commit: true;
}

export type Slot = Part | Claim;

export interface Loaded {
  version: number;
  state: UploadState;
}

export interface StoredPart extends Part {
  slot: number;
  key: string;
}

/** Upload ids are UUIDs; anything else in the URL is an unknown upload, never an index key. */
const UPLOAD_ID = /^[A-Za-z0-9-]{1,64}$/;

/** Conditional writes of the state retried when their reply was lost, before the request fails. */
const STATE_ATTEMPTS = 3;

export class UploadItems {
  constructor(private readonly ctx: Ctx) {}

  async create(id: string, state: UploadState): Promise<void> {
    await this.ctx.index.putIfAbsent(keys.upload(id), state as unknown as Json, { expiresAt: this.expiry(state) });
  }

  /** The state as stored (not rolled forward); undefined when absent, expired, or not an upload this code wrote. */
  async find(id: string): Promise<Loaded | undefined> {
    if (!UPLOAD_ID.test(id)) return undefined;
    const item = await this.ctx.index.get(keys.upload(id));
    const state = item?.value as Partial<UploadState> | undefined;
    if (!item || typeof state?.count !== 'number' || typeof state.until !== 'number') return undefined;
    return { version: item.version, state: state as UploadState };
  }

  async load(name: string, id: string): Promise<Loaded> {
    const found = await this.find(id);
    if (!found || found.state.name !== name) throw new OciError('BLOB_UPLOAD_UNKNOWN', undefined, { uploadId: id });
    return found;
  }

  /** The state rolled forward over parts recorded beyond it (an append that stopped between its two writes). */
  async current(name: string, id: string): Promise<Loaded> {
    let s = await this.load(name, id);
    for (;;) {
      const part = await this.partAt(id, s.state.count);
      if (!part) return s;
      if (part.offset !== s.state.size) throw new Error(`upload ${id}: chunk ${s.state.count} starts at ${part.offset}, not at ${s.state.size}`);
      const state = advanced(s.state, part);
      const version = await this.ctx.index.compareAndSet(keys.upload(id), s.version, state as unknown as Json, { expiresAt: this.expiry(state) });
      s = version === undefined ? await this.load(name, id) : { version, state };
    }
  }

  /** The part in slot n, if the slot holds one (not a claim, not empty). */
  async partAt(id: string, slot: number): Promise<Part | undefined> {
    const item = await this.ctx.index.get(keys.uploadSlot(id, slot));
    return item && isPart(item.value) ? (item.value as unknown as Part) : undefined;
  }

  /** Whether slot n holds anything live (a part or a claim). */
  async slotTaken(id: string, slot: number): Promise<boolean> {
    return (await this.ctx.index.get(keys.uploadSlot(id, slot))) !== undefined;
  }

  /**
   * Writes `value` into slot n if it is free; true when the slot is ours, also after a lost
   * reply (an adapter that retried answers false, or the call failed after writing): the nonce
   * tells. A failure whose outcome the slot does not show is thrown.
   */
  async takeSlot(id: string, slot: number, value: Slot, expiresAt: number): Promise<boolean> {
    const key = keys.uploadSlot(id, slot);
    const ours = async () => ((await this.ctx.index.get(key))?.value as Partial<Slot> | undefined)?.nonce === value.nonce;
    try {
      if (await this.ctx.index.putIfAbsent(key, value as unknown as Json, { expiresAt })) return true;
    } catch (err) {
      if (await ours()) return true;
      throw err;
    }
    return ours();
  }

  /**
   * Moves the state past `part`, just written to slot s.count: the append's second write, which
   * also extends the upload's expiry. False when the state is gone (cancelled, expired).
   */
  async record(name: string, id: string, s: Loaded, part: Part): Promise<boolean> {
    const slot = s.state.count;
    let seen = s;
    for (let attempt = 1; ; attempt++) {
      const state = advanced(seen.state, part);
      let version: number | undefined;
      try {
        version = await this.ctx.index.compareAndSet(keys.upload(id), seen.version, state as unknown as Json, { expiresAt: this.expiry(state) });
      } catch (err) {
        // The reply may be lost after the write: the re-read below tells.
        if (attempt >= STATE_ATTEMPTS) throw err;
      }
      if (version !== undefined) return true;
      const found = await this.find(id);
      if (!found || found.state.name !== name) return false;
      // Another request rolled the state forward over our part (or our lost write landed).
      if (found.state.count > slot) return true;
      if (attempt >= STATE_ATTEMPTS) throw new Error(`upload ${id}: the state did not take chunk ${slot}`);
      seen = found;
    }
  }

  /** Deletes the state if it is still at `version`: a commit's commit point. True when this call ended the upload. */
  async end(id: string, version: number): Promise<boolean> {
    try {
      // False can be our own delete too: an adapter that retried after a lost reply finds it gone.
      if (await this.ctx.index.delete(keys.upload(id), version)) return true;
    } catch (err) {
      if ((await this.find(id)) !== undefined) throw err;
    }
    // The claim keeps every other writer off (a cancel aside, which ends the upload as well), so
    // a state gone now is over for good, and its parts are garbage.
    return (await this.find(id)) === undefined;
  }

  /** Deletes the state whatever its version (cancel). */
  remove(id: string): Promise<boolean> {
    return this.ctx.index.delete(keys.upload(id));
  }

  /** Gives a claim back (its commit failed), if it is still ours. */
  async release(id: string, slot: number, claim: Claim): Promise<void> {
    const key = keys.uploadSlot(id, slot);
    const item = await this.ctx.index.get(key);
    if ((item?.value as Partial<Slot> | undefined)?.nonce === claim.nonce) await this.ctx.index.delete(key, item!.version);
  }

  /** The parts of chunks [0, count), in order; any gap is an upload damaged beyond use (thrown). */
  async parts(id: string, count: number): Promise<StoredPart[]> {
    const parts = (await this.allParts(id)).filter((p) => p.slot < count);
    parts.forEach((p, i) => {
      if (p.slot !== i) throw new Error(`upload ${id}: chunk ${i} has no part item`);
    });
    if (parts.length !== count) throw new Error(`upload ${id}: chunk ${parts.length} has no part item`);
    return parts;
  }

  /** Every part item of the upload, in slot order (cancel and commit delete their objects). */
  async allParts(id: string): Promise<StoredPart[]> {
    const parts: StoredPart[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await this.ctx.index.list(keys.uploadSlots(id), { after, limit: MAX_LIST_LIMIT });
      for (const { sk, item } of page) {
        if (!isPart(item.value)) continue;
        const part = item.value as unknown as Part;
        const slot = Number(sk);
        parts.push({ ...part, slot, key: objects.uploadPart(id, slot, part.nonce) });
      }
      if (page.length < MAX_LIST_LIMIT) return parts;
      after = page[page.length - 1]!.sk;
    }
  }

  /** The state's expiry: uploadTtlMs from now, never past `until` (the part items' expiry). */
  expiry(state: UploadState): number {
    return Math.min(this.ctx.clock.now() + this.ctx.options.uploadTtlMs, state.until);
  }
}

export function advanced(state: UploadState, part: Part): UploadState {
  return { ...state, count: state.count + 1, size: part.offset + part.size };
}

function isPart(value: Json): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && typeof value.nonce === 'string' && value.commit === undefined;
}

/** 64 random bits in hex: tells one request's part object and slot item from a racing request's. */
export function newNonce(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The body, or null when it has no bytes. Node hands every request a body stream, an empty one
 * included, and an empty body must neither count as a chunk (against MAX_UPLOAD_PARTS) nor be
 * stored; so this reads ahead to the first bytes, and no further. A body that breaks off is the
 * client's fault, here and in the stream returned.
 */
export async function nonEmpty(body: ByteStream | null): Promise<ByteStream | null> {
  if (!body) return null;
  const reader = body.getReader();
  const read = async () => {
    try {
      return await reader.read();
    } catch {
      throw new OciError('BLOB_UPLOAD_INVALID', 'the request body broke off before its end');
    }
  };
  let first: Uint8Array | undefined;
  while (!first) {
    const next = await read();
    if (next.done) return null;
    if (next.value.byteLength > 0) first = next.value;
  }
  const head = first;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(head);
    },
    async pull(controller) {
      try {
        const next = await read();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      } catch (err) {
        controller.error(err);
      }
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}
