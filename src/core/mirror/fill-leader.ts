import { messageOf, OciError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { storeContent } from '../registry/content.js';
import { keys, objects } from '../registry/keys.js';
import { concatStreams } from '../streams.js';
import type { Json, Lease } from '../../ports/meta-index.js';
import type { ByteStream } from '../../ports/blob-store.js';
import type { IncrementalHash } from '../../ports/hash.js';
import type { Upstream } from '../../ports/upstream.js';
import { fillLimit, MAX_RESUMES, partsOf, type FillDeps, type FillSource, type FillState } from './fill-state.js';
import { recordOf, upstreamError } from './failures.js';

/** A fill this process leads: the download, the part writes, and the memory window its local followers read. */
export class LocalFill {
  state: FillState;
  size: number | undefined;
  /** Bytes below this are in stored parts; [windowStart, received) are in `chunks`. */
  windowStart: number;
  received: number;
  committed = false;
  verified = false;
  stopped = false;
  failure: OciError | undefined;
  readonly started: Promise<void>;
  private markStarted!: () => void;
  private chunks: Array<{ offset: number; bytes: Uint8Array }> = [];
  private changedNow: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  lease: Lease;
  private readonly token: number;
  private readonly limit: number;

  constructor(
    private readonly deps: FillDeps,
    private readonly digest: Digest,
    lease: Lease,
    private readonly source: FillSource,
    private readonly upstream: Upstream,
    resume: FillState | undefined,
    sizeHint: number | undefined,
    private readonly releaseBudget: () => void,
  ) {
    this.limit = fillLimit(deps.ctx.options);
    this.lease = lease;
    this.token = lease.token;
    const stored = resume?.stored ?? 0;
    this.state = {
      phase: 'filling',
      token: lease.token,
      stored,
      segments: [...(resume?.segments ?? []).filter((s) => s.start < stored), { token: lease.token, start: stored, part: deps.options.partBytes }],
    };
    if (resume?.size !== undefined) this.state.size = resume.size;
    this.size = resume?.size ?? sizeHint;
    this.windowStart = stored;
    this.received = stored;
    this.pendingEnd = stored;
    this.started = new Promise((resolve) => {
      this.markStarted = () => {
        this.isStarted = true;
        resolve();
      };
    });
  }

  /** Whether `started` has settled (the upstream answered, or the fill failed before it). */
  isStarted = false;

  /**
   * Resolves when the state changes (bytes arrive, a part is stored, the fill ends). One
   * promise serves every waiter until then, so followers that wake on their own timers do not
   * pile up callbacks while the fill stalls.
   */
  changed(): Promise<void> {
    this.changedNow ??= new Promise((resolve) => (this.wake = resolve));
    return this.changedNow;
  }

  /** Returns the fill's memory budget (idempotent); the fill is over or dead. */
  forget(): void {
    this.releaseBudget();
  }

  /**
   * Bytes from `pos` that are in memory and may be served: everything received except the
   * most recent chunk until the digest is verified (so a blob that fails verification never
   * reaches a client whole). At most `most` bytes: what lies in one chunk is a view of it, and
   * what spans several (a client that fell behind the upstream) is copied into one array, so
   * that a response writes it in one go instead of once per upstream chunk. `copied` says
   * whether the bytes are the caller's own.
   */
  slice(pos: number, end: number | undefined, most: number): { bytes: Uint8Array; copied: boolean } | undefined {
    if (pos < this.windowStart || this.chunks.length === 0) return undefined;
    const last = this.chunks[this.chunks.length - 1]!;
    const readable = this.verified ? this.received : last.offset;
    const limit = Math.min(end === undefined ? readable : Math.min(readable, end), pos + most);
    if (pos >= limit) return undefined;
    let i = this.chunks.findIndex((c) => c.offset <= pos && pos < c.offset + c.bytes.byteLength);
    if (i < 0) return undefined;
    const first = this.chunks[i]!;
    if (limit <= first.offset + first.bytes.byteLength) return { bytes: first.bytes.subarray(pos - first.offset, limit - first.offset), copied: false };
    const bytes = new Uint8Array(limit - pos);
    for (let at = 0; at < bytes.byteLength; i++) {
      const chunk = this.chunks[i]!;
      const from = pos + at - chunk.offset;
      const n = Math.min(chunk.bytes.byteLength - from, bytes.byteLength - at);
      bytes.set(chunk.bytes.subarray(from, from + n), at);
      at += n;
    }
    return { bytes, copied: true };
  }

  async run(): Promise<void> {
    const { ctx, metrics, options } = this.deps;
    this.began = ctx.clock.now();
    const heartbeat = setInterval(() => {
      void ctx.index.renewLease(this.lease, options.leaseMs).then(
        (renewed) => {
          if (renewed) this.lease = renewed;
          // A renewal that lost the race with the commit's release is no loss.
          else if (!this.committed) void this.abort(new OciError('UPSTREAM_UNAVAILABLE', 'this instance lost the fill to another; try again'), false);
        },
        () => undefined,
      );
    }, Math.max(1000, Math.floor(options.leaseMs / 3)));
    try {
      const hash = await this.rehash();
      options.log?.('info', { msg: 'fill.lead', digest: this.digest.value, upstream: this.source.upstream, repository: this.source.repository, owner: this.lease.owner, token: this.token, from: this.received });
      await this.download(hash);
      const encoded = hash.digest();
      if (encoded !== this.digest.encoded) {
        throw new OciError('UPSTREAM_INVALID', `upstream "${this.source.upstream}" sent bytes that do not match ${this.digest.value}`, {
          digest: this.digest.value,
        });
      }
      await this.flush(true);
      this.verified = true;
      this.size = this.received;
      this.state = { ...this.state, phase: 'verified', size: this.received, stored: this.received };
      await this.update();
      this.notify();
      // Inside a writer's hold, and linked into the repository it was asked for before the hold
      // ends: no collecting run can take the bytes between their commit and their first link.
      await storeContent(ctx, this.digest, () => this.compose(), () => this.deps.link(this.source.name, this.digest.value, this.received).then(() => undefined));
      this.state = { ...this.state, phase: 'committed' };
      this.committed = true;
      clearInterval(heartbeat);
      // The content is committed whatever the index answers: a release that keeps failing is
      // no failed fill (the lease expires by itself; the parts are left to reclaim).
      const released = await this.retried('state', () => ctx.index.releaseLease(this.lease, this.state as unknown as Json)).then(
        (r) => r || this.releasedByUs(),
        () => this.releasedByUs(),
      );
      options.log?.('info', { msg: 'fill.commit', digest: this.digest.value, bytes: this.received, ms: ctx.clock.now() - this.began, released });
      this.stopped = true;
      this.notify();
      // Only while it was still ours: a successor that took over may be composing these parts.
      if (released) await this.deleteParts();
    } catch (err) {
      clearInterval(heartbeat);
      if (!(err instanceof OciError) || err.kind === 'INTERNAL') console.error(`outpost: the fill of ${this.digest.value} failed:`, err);
      const failure = err instanceof OciError ? err : storeFailure(err);
      metrics.count('outpost_fills_failed_total', { reason: failure.kind });
      // Awaited: on workerd the background work ends with run(), and the release with it.
      await this.abort(failure, true);
    }
  }

  /**
   * Gives the fill up because this process is stopping, so that the next request on any
   * instance resumes it from the stored parts at once instead of after the lease expires: no
   * further byte is read, the part write in flight lands (with its state write), and the lease
   * is released with the state. A fill already verified is let finish its commit instead.
   */
  async abandon(): Promise<void> {
    if (this.verified) {
      while (!this.stopped) await this.changed();
      return;
    }
    if (!this.halt(new OciError('UPSTREAM_UNAVAILABLE', 'this instance is stopping; try again'))) return;
    await this.reading?.cancel().catch(() => undefined);
    await this.writing.catch(() => undefined);
    await this.deps.ctx.index.releaseLease(this.lease, this.state as unknown as Json).catch(() => false);
  }

  /** Marks the fill stopped with `failure` and wakes its followers; false when it already was. */
  private halt(failure: OciError): boolean {
    if (this.stopped) return false;
    this.stopped = true;
    this.failure = failure;
    const { ctx, options } = this.deps;
    options.log?.('warn', { msg: 'fill.fail', digest: this.digest.value, kind: failure.kind, message: failure.message.slice(0, 300), received: this.received, ms: ctx.clock.now() - this.began });
    this.markStarted();
    this.notify();
    return true;
  }

  /** Stops the fill; `release` gives the lease up now (with the state a successor needs). */
  private async abort(failure: OciError, release: boolean): Promise<void> {
    if (!this.halt(failure) || !release) return;
    const { ctx } = this.deps;
    // The upstream lied (wrong digest or size) or refused: a successor must start afresh.
    // The stream merely broke off: a successor resumes from the stored parts.
    // Refused before any byte: followers answer with the same error, the parts stay for a retry.
    const state: FillState =
      failure.kind === 'UPSTREAM_INVALID'
        ? { ...this.state, phase: 'failed', stored: 0, segments: [], failure: recordOf(failure) }
        : !this.startedOk
          ? { ...this.state, phase: 'failed', failure: recordOf(failure) }
          : this.state;
    await ctx.index.releaseLease(this.lease, state as unknown as Json).catch(() => false);
  }

  /**
   * Whether the lease item shows this fill's own release with the committed state: a release
   * tried again after its reply was lost answers false (it finds the lease given up), though
   * the first one landed. Only then are the parts ours to delete; a successor that took the
   * lease over has a larger token.
   */
  private async releasedByUs(): Promise<boolean> {
    const view = await this.deps.ctx.index.readLease<FillState & Json>(keys.fill(this.digest.value)).catch(() => undefined);
    return view !== undefined && view.holder === undefined && view.token === this.token && view.state?.phase === 'committed';
  }

  /** Why the fill stopped, for a download step that finds it stopped. */
  private whyStopped(): OciError {
    return this.failure ?? new OciError('UPSTREAM_UNAVAILABLE', 'the fill was stopped');
  }

  /** The upstream body being read, for abandon() to let go of. */
  private reading: ReadableStreamDefaultReader<Uint8Array> | undefined;
  /** The upstream answered and the size is known: clients may be sent headers. */
  startedOk = false;
  /** When run() started, for the log. */
  private began = 0;

  /** No hash state survives a process: a successor hashes the stored prefix again. */
  private async rehash(): Promise<IncrementalHash> {
    const hash = this.deps.ctx.hash(this.digest.algorithm);
    if (this.state.stored === 0) return hash;
    for (const part of partsOf(this.digest, this.state, this.state.stored)) {
      const object = await this.deps.ctx.store.get(part.key);
      if (!object || object.size !== part.length) {
        // A part is gone (reclaimed): start over with a fresh segment.
        this.state = { ...this.state, stored: 0, segments: [{ token: this.token, start: 0, part: this.deps.options.partBytes }] };
        this.windowStart = this.received = this.pendingEnd = 0;
        await object?.body.cancel().catch(() => undefined);
        return this.deps.ctx.hash(this.digest.algorithm);
      }
      const reader = object.body.getReader();
      for (;;) {
        const next = await reader.read();
        if (next.done) break;
        hash.update(next.value);
      }
    }
    return hash;
  }

  private async download(hash: IncrementalHash): Promise<void> {
    const { metrics, options } = this.deps;
    for (let resumes = 0; ; resumes++) {
      if (this.stopped) throw this.whyStopped();
      // Taken over after every part was stored (the leader died before committing): nothing
      // to download; the stored parts were hashed again and are checked below.
      if (this.size !== undefined && this.received === this.size && this.received > 0) {
        if (!this.startedOk) {
          this.startedOk = true;
          await this.update();
          this.markStarted();
        }
        return;
      }
      const offset = this.received;
      const answer = await this.upstream.blob(this.source.repository, this.digest.value, offset > 0 ? offset : undefined);
      metrics.count('outpost_upstream_requests_total', { upstream: this.source.upstream, kind: 'blob', result: answer.kind });
      if (answer.kind !== 'ok') {
        if (resumes > 0 && answer.kind === 'unavailable' && resumes < MAX_RESUMES) {
          await options.sleep(200 * 2 ** resumes);
          continue;
        }
        throw upstreamError(this.source.upstream, answer, () => new OciError('BLOB_UNKNOWN', `upstream "${this.source.upstream}" has no blob ${this.digest.value}`, { digest: this.digest.value }));
      }
      const size = answer.size ?? (answer.length !== undefined ? answer.offset + answer.length : undefined);
      if (size !== undefined) {
        if (this.size !== undefined && size !== this.size) {
          await answer.body.cancel().catch(() => undefined);
          throw new OciError('UPSTREAM_INVALID', `upstream "${this.source.upstream}" says ${this.digest.value} has ${size} bytes, expected ${this.size}`);
        }
        this.size = size;
      }
      if (this.size !== undefined && this.size > this.limit) {
        await answer.body.cancel().catch(() => undefined);
        throw tooLargeToFill(this.digest.value, this.limit);
      }
      if (answer.offset > offset) {
        await answer.body.cancel().catch(() => undefined);
        throw new OciError('UPSTREAM_INVALID', `upstream "${this.source.upstream}" answered a range that starts after the one asked for`);
      }
      if (!this.startedOk) {
        this.startedOk = true;
        if (this.size !== undefined) this.state = { ...this.state, size: this.size };
        try {
          await this.update();
        } catch (err) {
          // Lost the lease (or the index failed) with the body unread: let the connection go.
          await answer.body.cancel().catch(() => undefined);
          throw err;
        }
        this.markStarted();
      }
      // An upstream that ignores Range sends the blob from 0: skip what we already have.
      let skip = offset - answer.offset;
      const countReceived = metrics.counter('outpost_upstream_bytes_total', { upstream: this.source.upstream });
      const reader = answer.body.getReader();
      this.reading = reader;
      try {
        for (;;) {
          const next = await reader.read();
          if (next.done) break;
          let bytes = next.value;
          countReceived(bytes.byteLength);
          if (skip > 0) {
            const n = Math.min(skip, bytes.byteLength);
            skip -= n;
            bytes = bytes.subarray(n);
          }
          if (bytes.byteLength === 0) continue;
          if (this.size !== undefined && this.received + bytes.byteLength > this.size) {
            throw new OciError('UPSTREAM_INVALID', `upstream "${this.source.upstream}" sent more than the ${this.size} bytes of ${this.digest.value}`);
          }
          if (this.received + bytes.byteLength > this.limit) throw tooLargeToFill(this.digest.value, this.limit);
          if (this.stopped) throw this.whyStopped();
          hash.update(bytes);
          try {
            await this.append(bytes);
          } catch (err) {
            // The store or the index failed, not the upstream: no resume would help.
            throw err instanceof OciError ? err : storeFailure(err);
          }
        }
      } catch (err) {
        await reader.cancel().catch(() => undefined);
        if (err instanceof OciError) throw err;
        if (this.stopped) throw this.failure ?? err;
        if (resumes >= MAX_RESUMES) {
          throw new OciError('UPSTREAM_UNAVAILABLE', `upstream "${this.source.upstream}" kept breaking off ${this.digest.value}: ${messageOf(err)}`);
        }
        // The stream broke off: resume from what we have with a Range request.
        this.resumed('broke off', err);
        continue;
      }
      // Abandoned (abandon() let the body go): not a short answer of the upstream's.
      if (this.stopped) throw this.whyStopped();
      if (this.size !== undefined && this.received < this.size) {
        if (resumes >= MAX_RESUMES) {
          throw new OciError('UPSTREAM_UNAVAILABLE', `upstream "${this.source.upstream}" sent ${this.received} of ${this.size} bytes`);
        }
        this.resumed('ended short');
        continue;
      }
      return;
    }
  }

  /** Logs why the download asks the upstream again, and from which byte. */
  private resumed(why: 'broke off' | 'ended short', err?: unknown): void {
    const cause = err === undefined ? undefined : messageOf(err);
    this.deps.options.log?.('warn', { msg: 'fill.resume', digest: this.digest.value, from: this.received, why, ...(cause ? { cause } : {}) });
  }

  /** Adds bytes to the window, split at part boundaries; writes a full part once more bytes follow it. */
  private async append(bytes: Uint8Array): Promise<void> {
    const partBytes = this.deps.options.partBytes;
    while (bytes.byteLength > 0) {
      const inPart = this.received - this.pendingEnd;
      if (inPart === partBytes) {
        await this.flush(false);
        continue;
      }
      const n = Math.min(bytes.byteLength, partBytes - inPart);
      this.chunks.push({ offset: this.received, bytes: bytes.subarray(0, n) });
      this.received += n;
      bytes = bytes.subarray(n);
      this.notify();
    }
  }

  /** Where the part being filled starts: everything before it is written or being written. */
  private pendingEnd: number;
  private writing: Promise<void> = Promise.resolve();
  private readonly pieces = new PartPieces();

  /**
   * Writes the bytes of the current part (all of them when `last`). At most one part is being
   * written while the next fills, so a fill holds at most two parts in memory.
   */
  private async flush(last: boolean): Promise<void> {
    await this.writing;
    const offset = this.pendingEnd;
    const length = this.received - offset;
    if (length === 0) {
      if (last) await this.writing;
      return;
    }
    const chunks = this.chunks.filter((c) => c.offset >= offset).map((c) => c.bytes);
    this.pendingEnd = this.received;
    const key = objects.fillPart(this.digest, offset, this.token);
    const write = this.putPart(key, chunks, length).then(async () => {
      this.chunks = this.chunks.filter((c) => c.offset >= offset + length);
      this.windowStart = offset + length;
      if (!last) {
        this.state = { ...this.state, stored: offset + length };
        await this.update();
      }
      this.notify();
    });
    this.writing = write;
    // Awaited by the next flush; until then its failure must not count as unhandled.
    write.catch(() => undefined);
    if (last) await write;
  }

  /**
   * Writes one part. The chunks stay in the window until it is written, so a write that failed
   * is made again from them: a store's passing error must not cost the bytes already received
   * (a successor would download them again). Scratch: the parts are hashed again with the whole
   * blob before anything is committed. Same key, same bytes: a write made twice is one write.
   */
  private async putPart(key: string, chunks: Uint8Array[], length: number): Promise<void> {
    await this.retried('part', async () => {
      const body = this.deps.options.copyChunks ? this.pieces.stream(chunks) : { stream: chunksStream(chunks), done: () => undefined };
      await this.deps.ctx.store.put(key, body.stream, length, { scratch: true });
      body.done();
    });
  }

  /**
   * Writes the state: one conditional write that succeeds only while this instance holds the
   * lease. Undefined (not the holder) ends the fill; an error (the index did not answer) is
   * tried again, which is safe: the write is conditional on holder and token, so one that
   * landed before its reply was lost lands again the same.
   */
  private async update(): Promise<void> {
    const renewed = await this.retried('state', () => this.deps.ctx.index.updateLease(this.lease, this.state as unknown as Json, this.deps.options.leaseMs));
    if (!renewed) throw new OciError('UPSTREAM_UNAVAILABLE', 'this instance lost the fill to another; try again');
    this.lease = renewed;
  }

  /**
   * `op`, tried up to STORE_ATTEMPTS times while the fill goes on, each retry counted and logged;
   * nothing is tried again once the fill has stopped. Every error counts as passing: one that
   * is not (a programming error, a store refusing the size) costs two more attempts and 300 ms,
   * and the SDKs' own retries of the cloud adapters come on top.
   */
  private async retried<T>(what: 'part' | 'state', op: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (attempt >= STORE_ATTEMPTS || this.stopped) throw err;
        this.deps.metrics.count('outpost_fill_retries_total', { what });
        this.deps.options.log?.('warn', { msg: 'fill.retry', digest: this.digest.value, what, attempt, cause: messageOf(err) });
        await this.deps.options.sleep(STORE_RETRY_MS * attempt);
        if (this.stopped) throw this.failure ?? err;
      }
    }
  }

  private async compose(): Promise<void> {
    const { store } = this.deps.ctx;
    const parts = partsOf(this.digest, this.state, this.received);
    const to = objects.content(this.digest);
    if (parts.length === 0) {
      await store.put(to, new PartPieces().stream([]).stream, 0);
    } else if (store.compose) {
      await store.compose(
        parts.map((p) => p.key),
        to,
      );
    } else {
      const body = concatStreams(
        parts.map((p) => async () => {
          const object = await store.get(p.key);
          if (!object) throw new Error(`fill part ${p.key} vanished before it was composed`);
          return object.body;
        }),
      );
      await store.put(to, body, this.received);
    }
  }

  private async deleteParts(): Promise<void> {
    const parts = partsOf(this.digest, this.state, this.received);
    await Promise.all(parts.map((p) => this.deps.ctx.store.delete(p.key).catch(() => undefined)));
  }

  private notify(): void {
    const wake = this.wake;
    this.changedNow = undefined;
    this.wake = undefined;
    wake?.();
  }
}

/** A failure of the store or the index during a fill: ours, not the upstream's or the client's. */
function storeFailure(err: unknown): OciError {
  return new OciError('INTERNAL', `the fill could not be stored: ${messageOf(err)}`);
}

/**
 * Attempts at a part write or a state write before the fill gives up (then a successor resumes
 * from the stored parts), and the wait before the first retry (it grows with each).
 */
const STORE_ATTEMPTS = 3;
const STORE_RETRY_MS = 100;

/**
 * Bytes a copying part write (FillsOptions.copyChunks) is handed at a time: the window holds the
 * upstream's small chunks (tens of KiB), copied into pieces of this size. Where the chunks
 * themselves are handed over, the stores gather them (the file store into writes of 1 MiB, S3
 * into its part buffers).
 */
const WRITE_PIECE_BYTES = 1024 * 1024;
/**
 * Pieces a fill keeps between its part writes. A store reads a part a piece or two at a time
 * (one being written, one pulled ahead), so two serve every part after the first.
 */
const SPARE_PIECES = 2;

/**
 * The pieces of a fill's part writes: the window's chunks copied into pieces of
 * WRITE_PIECE_BYTES. Copies, because the store's runtime may detach what it is given (workerd
 * does) while the window keeps serving the originals to followers. Pieces are used again for
 * the next part once the write that read them has resolved (a store is done with its body
 * then) and if the store did not take them over: a fill of 256 MiB otherwise allocated 256
 * fresh pieces, and the garbage collector's work on that much short-lived memory cost a fill
 * more CPU than the copies themselves.
 */
class PartPieces {
  private readonly spare: Uint8Array[] = [];

  /** A stream of `chunks` in pieces, holding one piece at a time; `done()` once the write has resolved. */
  stream(chunks: Uint8Array[]): { stream: ByteStream; done: () => void } {
    const lent: Uint8Array[] = [];
    let i = 0;
    let within = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull: (controller) => {
        let left = 0;
        for (let j = i, w = within; j < chunks.length && left < WRITE_PIECE_BYTES; j++, w = 0) left += chunks[j]!.byteLength - w;
        if (left === 0) return controller.close();
        const whole = this.spare.pop() ?? new Uint8Array(WRITE_PIECE_BYTES);
        lent.push(whole);
        const piece = whole.subarray(0, Math.min(left, WRITE_PIECE_BYTES));
        let at = 0;
        while (at < piece.byteLength) {
          const chunk = chunks[i]!;
          const n = Math.min(chunk.byteLength - within, piece.byteLength - at);
          piece.set(chunk.subarray(within, within + n), at);
          at += n;
          within += n;
          if (within === chunk.byteLength) {
            i++;
            within = 0;
          }
        }
        controller.enqueue(piece);
      },
    });
    const done = () => {
      // A detached piece has no bytes left: the store kept it.
      for (const piece of lent) if (piece.byteLength === WRITE_PIECE_BYTES && this.spare.length < SPARE_PIECES) this.spare.push(piece);
      lent.length = 0;
    };
    return { stream, done };
  }
}

/** The window's own chunks, one after another (a store that only reads them: FillsOptions.copyChunks). */
function chunksStream(chunks: Uint8Array[]): ByteStream {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull: (controller) => (i < chunks.length ? controller.enqueue(chunks[i++]!) : controller.close()),
  });
}

/** A blob larger than a fill may store (fillLimit). */
export function tooLargeToFill(digest: string, limit: number): OciError {
  return new OciError('DENIED', `blob ${digest} is larger than this mirror's limit of ${limit} bytes (OUTPOST_MAX_BLOB_BYTES)`, { digest, limit });
}
