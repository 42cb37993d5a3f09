/**
 * The pure pieces of the S3 adapter's write path: how compose cuts sources into S3 parts, the
 * per-store budget of part buffers, and filling a part buffer from a stream.
 */

const MiB = 1024 * 1024;

/** S3's smallest part (all but the last). */
export const MIN_PART_BYTES = 5 * MiB;
/** The largest range one UploadPartCopy of a compose copies (S3 allows 5 GiB; smaller ranges retry cheaper). */
const COPY_PART_BYTES = 512 * MiB;

/** A part as compose sized it: its key, size and the ETag that every later request names. */
export interface Source {
  key: string;
  size: number;
  etag: string;
}

/** A byte range of a source. */
export interface Piece {
  source: Source;
  offset: number;
  length: number;
}

/** One part of the composed object: a server-side copy, or bytes read back and uploaded. */
export type PlannedPart = { copy: Piece } | { upload: Piece[]; size: number };

/**
 * The parts of a composed object. S3 wants every part but the last to be at least 5 MiB, so
 * every stretch of sources of at least 5 MiB is copied server-side (in ranges of at most
 * COPY_PART_BYTES), and smaller sources are gathered, with the head of the next source if
 * needed, into uploaded parts of exactly 5 MiB (the last one may be smaller). Only those bytes
 * pass through the store, at most 5 MiB of them at a time.
 */
export function planCompose(sources: Source[]): PlannedPart[] {
  const plan: PlannedPart[] = [];
  let gathered: Piece[] = [];
  let held = 0;
  const flush = () => {
    if (held > 0) plan.push({ upload: gathered, size: held });
    gathered = [];
    held = 0;
  };
  for (const source of sources) {
    let offset = 0;
    if (held > 0) {
      offset = Math.min(source.size, MIN_PART_BYTES - held);
      if (offset > 0) gathered.push({ source, offset: 0, length: offset });
      held += offset;
      if (held === MIN_PART_BYTES) flush();
    }
    const rest = source.size - offset;
    if (rest === 0) continue;
    if (held === 0 && rest >= MIN_PART_BYTES) {
      // Equal ranges, so that none falls below the minimum.
      const count = Math.ceil(rest / COPY_PART_BYTES);
      for (let i = 0; i < count; i++) {
        const start = offset + Math.floor((rest * i) / count);
        const end = offset + Math.floor((rest * (i + 1)) / count);
        plan.push({ copy: { source, offset: start, length: end - start } });
      }
    } else {
      gathered.push({ source, offset, length: rest });
      held += rest;
    }
  }
  flush();
  return plan;
}

/** How often a write waiting for buffer budget also wakes on its own timer. */
const WAIT_TICK_MS = 25;

/**
 * The part buffers of one store, within one budget of bytes for all its concurrent writes.
 * `take` waits, first come first served, until the bytes fit: a write holds only buffers that
 * are being read into or sent, which are given back without needing more budget, so every
 * waiter is eventually served and a write always progresses with at least one part (the budget
 * holds at least one). Buffers of the standard part size are reused while the store is busy
 * and let go once it is idle; allocated plus pooled bytes never exceed the budget.
 */
export class PartBuffers {
  private held = 0;
  private readonly pool: Uint8Array[] = [];
  private readonly waiting: Array<{ bytes: number; grant: () => void }> = [];

  constructor(
    readonly budget: number,
    private readonly standard: number,
    private readonly onBuffer?: (bytes: number) => void,
  ) {}

  async take(bytes: number): Promise<Uint8Array> {
    if (bytes > this.budget) throw new Error(`a part of ${bytes} bytes exceeds the buffer budget of ${this.budget}`);
    if (this.waiting.length > 0 || this.held + bytes > this.budget) {
      // Also woken by a timer of the waiting write's own: on workerd a request that awaits only
      // a promise another request settles (here: another write giving back its buffer) is
      // cancelled as hung.
      let granted = false;
      const grantedNow = new Promise<void>((grant) => this.waiting.push({ bytes, grant: () => ((granted = true), grant()) }));
      while (!granted) await Promise.race([grantedNow, new Promise((r) => setTimeout(r, WAIT_TICK_MS))]);
    } else {
      this.held += bytes;
    }
    if (bytes === this.standard && this.pool.length > 0) return this.pool.pop()!;
    while (this.pool.length > 0 && this.held + this.pool.length * this.standard > this.budget) this.drop(this.pool.pop()!);
    this.onBuffer?.(bytes);
    return new Uint8Array(bytes);
  }

  give(buffer: Uint8Array): void {
    this.held -= buffer.byteLength;
    if (buffer.byteLength === this.standard) this.pool.push(buffer);
    else this.drop(buffer);
    while (this.waiting.length > 0 && this.held + this.waiting[0]!.bytes <= this.budget) {
      const next = this.waiting.shift()!;
      this.held += next.bytes;
      next.grant();
    }
    if (this.held === 0) while (this.pool.length > 0) this.drop(this.pool.pop()!);
  }

  private drop(buffer: Uint8Array): void {
    this.onBuffer?.(-buffer.byteLength);
  }
}

/** `fn` over `items`, at most `limit` at once, results in order. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * Reads from `reader` into `buffer` until it is full or the stream ends. Chunks that straddle
 * the end of the buffer are split; the remainder is kept for the next fill.
 */
export async function fill(reader: ReadableStreamDefaultReader<Uint8Array>, buffer: Uint8Array): Promise<{ bytes: Uint8Array; ended: boolean }> {
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
 * anything that arrives for the next fill.
 */
export async function atEnd(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<boolean> {
  if (carry.has(reader)) return false;
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
