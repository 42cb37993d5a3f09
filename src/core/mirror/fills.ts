import { OciError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Metrics } from '../metrics.js';
import { objects, keys } from '../registry/keys.js';
import type { Ctx } from '../registry/context.js';
import type { Json, Lease, LeaseView } from '../../ports/meta-index.js';
import type { ByteStream } from '../../ports/blob-store.js';
import type { IncrementalHash } from '../../ports/hash.js';
import type { Upstream } from '../../ports/upstream.js';
import type { ByteBudget } from './budget.js';
import { concatStreams } from '../streams.js';
import { errorOf, recordOf, upstreamError, type FailureRecord } from './failures.js';

/**
 * Blob fills: exactly one upstream download per digest across every instance.
 *
 * A fill is the state machine below, kept in ONE index item: the lease at fill/<digest>, whose
 * state (FillState) only the live holder can write (MetaIndex.updateLease checks holder, token
 * and expiry in the same conditional write). Bytes go to part objects
 * fills/<alg>/<hex>/<offset>-<token> while they stream to clients; the last part is written
 * only once the digest and size are verified; then the parts are composed into the content
 * object blobs/<alg>/..., which is the only thing a cached read ever trusts.
 *
 *   state      | meaning                                      | moved by (one conditional write)         | who
 *   -----------+----------------------------------------------+------------------------------------------+---------------
 *   absent     | nobody ever filled the digest                | acquireLease -> leading                  | any instance
 *   leading    | holder live, phase "filling": parts [0,      | updateLease(stored += part) after each   | the holder
 *              | stored) are written, the last part withheld  | part is written (heartbeat: renewLease)  |
 *   verified   | digest and size checked, every part written  | updateLease(phase "verified")            | the holder
 *   committed  | content object written (compose)             | releaseLease(phase "committed")          | the holder
 *   failed     | the upstream lied (digest, size) or refused  | releaseLease(phase "failed")             | the holder
 *   abandoned  | "filling" or "verified" but the lease        | (time passes; the holder died or paused) | -
 *              | expired, or released after a broken stream   |                                          |
 *   taken over | a new holder resumes an abandoned fill       | acquireLease (returns the state left)    | any instance
 *
 * Leader:  acquire -> rebuild the hash from the stored parts (no hash state survives a process)
 *          -> GET the blob from the upstream from `stored` (Range) -> per part: put part, then
 *          updateLease -> at the end: verify, put the last part, updateLease(verified) -> compose
 *          -> releaseLease(committed) -> delete the parts. Any updateLease that returns
 *          undefined means another instance took over: stop at once, write nothing more.
 *          A stream that breaks off is resumed with a Range request (a few times), then the
 *          lease is released as "filling" so the next request resumes from the stored parts.
 * Follower: reads [pos, readable) where readable is what the holder says is stored (state) or,
 *          in the holder's own process, what is in its memory window; never the last part
 *          before "verified". When the lease is free and the fill not committed, a follower
 *          takes it over and becomes the leader from where the parts end.
 * Crashes: between a part put and its updateLease the part is orphaned (its key carries the
 *          dead holder's token; the successor writes its own keys): only bytes recorded in the
 *          state are ever read. Between verified and committed a successor composes again
 *          (compose is atomic and idempotent). After committed, parts are garbage (GC, by age).
 */

export interface FillSource {
  /** The upstream's configured name. */
  upstream: string;
  /** The upstream-relative repository the blob was asked for (it vouched for the blob). */
  repository: string;
}

interface Segment {
  token: number;
  start: number;
  part: number;
}

export interface FillState {
  phase: 'filling' | 'verified' | 'committed' | 'failed';
  /** The token of the holder that wrote this state: a state from an earlier holder is history, not news. */
  token: number;
  source: FillSource;
  /** The whole blob's size, once the upstream said. */
  size?: number;
  /** Bytes [0, stored) are in the parts that `segments` name. */
  stored: number;
  /** Who wrote which parts: holder `token` wrote parts of `part` bytes from `start` until the next segment's start. */
  segments: Segment[];
  failure?: FailureRecord;
}

export interface PartRef {
  key: string;
  offset: number;
  length: number;
}

/** The parts that hold bytes [0, upTo) of a fill, in order. */
export function partsOf(digest: Digest, state: Pick<FillState, 'segments'>, upTo: number): PartRef[] {
  const parts: PartRef[] = [];
  state.segments.forEach((seg, i) => {
    const end = Math.min(state.segments[i + 1]?.start ?? upTo, upTo);
    for (let offset = seg.start; offset < end; offset += seg.part) {
      parts.push({ key: objects.fillPart(digest, offset, seg.token), offset, length: Math.min(seg.part, end - offset) });
    }
  });
  return parts;
}

/** A blob larger than this is refused from any upstream: a bound on what one fill may write (64 GiB). */
export const MAX_FILL_BYTES = 64 * 1024 ** 3;
/** Resumes (Range requests) after a stream broke off, before the fill gives up. */
const MAX_RESUMES = 3;
/** Remote followers poll the fill's state this often at first, backing off to the maximum. */
const POLL_MIN_MS = 20;
const POLL_MAX_MS = 250;
/**
 * A request that waits on another request's fill in this process also wakes on a timer this
 * often. workerd cancels a request as hung when all it awaits is a promise that only another
 * request's work can settle (it does not see across requests), so waits always include a
 * timer of the waiting request's own; on Node it merely bounds a missed wake-up.
 */
const LOCAL_TICK_MS = 25;

export interface FillsOptions {
  partBytes: number;
  leaseMs: number;
  /** Who this instance is, for lease owners and logs. */
  instance: string;
  sleep: (ms: number) => Promise<void>;
}

export interface FillDeps {
  ctx: Ctx;
  metrics: Metrics;
  budget: ByteBudget;
  upstream: (name: string) => Upstream | undefined;
  options: FillsOptions;
}

/** Keeps work alive after the response is sent (ctx.waitUntil on Workers; detached on Node). */
export type Defer = (work: Promise<unknown>) => void;

/** What `open` found: content to read from the store, or a stream that follows a fill. */
export type FillOpen = { kind: 'committed'; size: number } | { kind: 'following'; size?: number; body: ByteStream; led: boolean };

export class Fills {
  private readonly local = new Map<string, LocalFill>();
  private readonly watches = new Map<string, RemoteWatch>();

  constructor(private readonly deps: FillDeps) {}

  /**
   * Streams bytes [start, end) of the blob (end: undefined = to its end), leading a fill when
   * nobody is, following the one in flight otherwise. Throws the mapped upstream error when the
   * fill fails before any byte could be sent (so the client gets an OCI error, not a 200).
   */
  async open(digest: Digest, source: FillSource, start: number, end: number | undefined, defer: Defer, sizeHint?: number): Promise<FillOpen> {
    const { ctx, metrics } = this.deps;
    for (let attempt = 0; attempt < 3; attempt++) {
      const mine = this.live(digest);
      if (mine && !mine.failure) {
        await this.untilStarted(mine);
        if (mine.failure) throw mine.failure;
        metrics.count('outpost_fills_followed_total', { where: 'local' });
        return { kind: 'following', size: mine.size, body: this.follow(digest, source, start, end, defer, mine), led: false };
      }
      const view = await ctx.index.readLease<FillState & Json>(keys.fill(digest.value));
      // The content object is the truth: it is written only once verified, and it outlives the
      // fill's lease item (which housekeeping sweeps a week after the commit).
      const content = await ctx.store.stat(objects.content(digest));
      if (content) return { kind: 'committed', size: content.size };
      if (view?.holder === undefined) {
        const led = await this.lead(digest, source, defer, sizeHint);
        if (led === 'committed') continue;
        if (led) {
          await this.untilStarted(led);
          if (led.failure) throw led.failure;
          return { kind: 'following', size: led.size, body: this.follow(digest, source, start, end, defer, led), led: true };
        }
      }
      // Someone else leads: wait for the size (or the failure), then follow its parts.
      metrics.count('outpost_lease_waits_total');
      const watch = this.watch(digest);
      const first = await watch.until((s) => s.size !== undefined || s.phase !== 'filling');
      if (!first) continue;
      if (first.phase === 'failed' && first.failure) throw errorOf(first.failure);
      if (first.phase === 'committed') continue;
      metrics.count('outpost_fills_followed_total', { where: 'remote' });
      return { kind: 'following', size: first.size, body: this.follow(digest, source, start, end, defer), led: false };
    }
    throw new OciError('UPSTREAM_UNAVAILABLE', 'the blob fill kept changing hands; try again', { digest: digest.value });
  }

  /** Whether the digest's content is committed, a fill is running for it, or neither. */
  async status(digest: Digest): Promise<'committed' | 'in-flight' | 'none'> {
    if (await this.deps.ctx.store.stat(objects.content(digest))) return 'committed';
    if (this.live(digest)) return 'in-flight';
    const view = await this.deps.ctx.index.readLease<FillState & Json>(keys.fill(digest.value));
    return view?.holder !== undefined ? 'in-flight' : 'none';
  }

  /**
   * This process's fill of the digest, if it is alive. One whose lease ran out without it
   * noticing is dead (its request's background work was cancelled: workerd ends waitUntil 30 s
   * after the client left, timers and all): it is forgotten and its budget returned, so that
   * this process goes through the index like any other.
   */
  private live(digest: Digest): LocalFill | undefined {
    const fill = this.local.get(digest.value);
    if (!fill) return undefined;
    if (fill.stopped || fill.lease.expiresAt > this.deps.ctx.clock.now()) return fill;
    fill.forget();
    if (this.local.get(digest.value) === fill) this.local.delete(digest.value);
    return undefined;
  }

  /** Takes the fill's lease and starts the download; undefined when another instance holds it. */
  private async lead(digest: Digest, source: FillSource, defer: Defer, sizeHint?: number): Promise<LocalFill | 'committed' | undefined> {
    const { ctx, options, budget, metrics } = this.deps;
    // Room for two parts; while there is none, look whether another instance has started
    // leading this fill meanwhile (then follow it instead).
    let release = budget.tryReserve(2 * options.partBytes);
    while (!release) {
      const view = await ctx.index.readLease(keys.fill(digest.value));
      if (view?.holder !== undefined) return undefined;
      await options.sleep(LOCAL_TICK_MS);
      release = budget.tryReserve(2 * options.partBytes);
    }
    let handedOver = false;
    try {
      const again = this.live(digest);
      if (again && !again.failure) return again;
      const owner = `${options.instance}:${crypto.randomUUID().slice(0, 8)}`;
      const r = await ctx.index.acquireLease(keys.fill(digest.value), owner, options.leaseMs);
      if (!r.acquired) return undefined;
      let lease: typeof r.lease | undefined = r.lease;
      try {
        const previous = r.state as (FillState & Json) | undefined;
        if (await ctx.store.stat(objects.content(digest))) {
          await ctx.index.releaseLease(r.lease, previous?.phase === 'committed' ? previous : null);
          lease = undefined;
          return 'committed';
        }
        const upstream = this.deps.upstream(source.upstream);
        if (!upstream) throw new OciError('UPSTREAM_UNAVAILABLE', `upstream "${source.upstream}" is not configured`);
        const resume = previous && previous.phase !== 'committed' && previous.stored > 0 ? previous : undefined;
        if (resume) metrics.count('outpost_fill_takeovers_total');
        // The bytes are the digest's whatever repository they came from: a successor downloads
        // the rest from the source that has just vouched for the blob, never from the previous
        // holder's (another upstream's client, or a repository that may be gone).
        const fill = new LocalFill(this.deps, digest, r.lease, source, upstream, resume, sizeHint, release);
        lease = undefined;
        handedOver = true;
        this.local.set(digest.value, fill);
        metrics.count('outpost_fills_led_total');
        const work = fill.run().finally(() => {
          fill.forget();
          if (this.local.get(digest.value) === fill) this.local.delete(digest.value);
        });
        defer(work);
        return fill;
      } finally {
        // Taken but not handed to a fill (it threw): give it back at once, not at expiry.
        if (lease) await ctx.index.releaseLease(lease).catch(() => false);
      }
    } finally {
      if (!handedOver) release();
    }
  }

  private async untilStarted(fill: LocalFill): Promise<void> {
    while (!fill.isStarted) await Promise.race([fill.started, this.deps.options.sleep(LOCAL_TICK_MS)]);
  }

  private watch(digest: Digest): RemoteWatch {
    let w = this.watches.get(digest.value);
    if (!w || w.closed) {
      w = new RemoteWatch(this.deps, digest, () => this.watches.delete(digest.value));
      this.watches.set(digest.value, w);
    }
    return w;
  }

  /**
   * A client's stream of bytes [start, end): from the leader's memory window when this process
   * leads, from the stored parts (what the state says is stored), and from the content object
   * once committed. Pull-driven: a slow client only reads slower, it never makes anyone buffer.
   * When the lease is found free before the fill is committed, this follower takes it over.
   */
  private follow(digest: Digest, source: FillSource, start: number, end: number | undefined, defer: Defer, initial?: LocalFill): ByteStream {
    const { ctx, metrics } = this.deps;
    let pos = start;
    let inner: ReadableStreamDefaultReader<Uint8Array> | undefined;
    let local = initial;
    let takeovers = 0;
    let vanished = 0;
    const fromParts = async (state: Pick<FillState, 'segments'>, readable: number) => {
      const part = partsOf(digest, state, readable).find((p) => p.offset <= pos && pos < p.offset + p.length);
      if (!part) return 'none';
      const until = end === undefined ? part.offset + part.length : Math.min(end, part.offset + part.length);
      const object = await ctx.store.get(part.key, { offset: pos - part.offset, length: until - pos });
      if (!object) {
        // Parts are deleted once composed: the state read before that is now out of date.
        if (++vanished > 3) throw new OciError('UPSTREAM_UNAVAILABLE', 'the parts of this fill keep vanishing; try again', { digest: digest.value });
        return 'vanished';
      }
      inner = object.body.getReader();
      return 'opened';
    };
    const fromContent = async (size: number) => {
      const until = end === undefined ? size : Math.min(end, size);
      if (pos >= until) return false;
      const object = await ctx.store.get(objects.content(digest), { offset: pos, length: until - pos });
      if (!object) throw new OciError('BLOB_UNKNOWN', 'the blob was removed while it was being read; try again', { digest: digest.value });
      inner = object.body.getReader();
      return true;
    };
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        for (;;) {
          if (end !== undefined && pos >= end) return controller.close();
          if (inner) {
            const next = await inner.read();
            if (!next.done) {
              pos += next.value.byteLength;
              metrics.count('outpost_served_bytes_total', { source: 'fill' }, next.value.byteLength);
              return controller.enqueue(next.value);
            }
            inner = undefined;
            continue;
          }
          if (local && !local.stopped && local.lease.expiresAt <= ctx.clock.now()) {
            // Its lease ran out unnoticed: the fill is dead (see live()); go through the index.
            local.forget();
            local = undefined;
          }
          if (local) {
            if (local.failure) {
              // Wrong bytes, or refused before any byte: this response is over. A stream that
              // merely broke off: follow (or become) whoever resumes it.
              if (local.failure.kind === 'UPSTREAM_INVALID' || !local.startedOk) throw local.failure;
              local = undefined;
              continue;
            }
            // A copy: a runtime may take over (detach) the buffer of a chunk sent in a response
            // (workerd does), and the window's buffers are shared with the part writes.
            const slice = local.slice(pos, end)?.slice();
            if (slice) {
              pos += slice.byteLength;
              metrics.count('outpost_served_bytes_total', { source: 'fill' }, slice.byteLength);
              return controller.enqueue(slice);
            }
            if (local.committed && local.size !== undefined) {
              if (await fromContent(local.size)) continue;
              return controller.close();
            }
            // Vanished: composed and committed meanwhile, which the next turn sees.
            if (pos < local.windowStart && (await fromParts(local.state, local.windowStart)) !== 'none') continue;
            if (local.stopped) {
              // It stopped without committing (lost its lease, or the upstream broke off):
              // follow whoever carries on.
              local = undefined;
              continue;
            }
            await Promise.race([local.changed(), this.deps.options.sleep(LOCAL_TICK_MS)]);
            continue;
          }
          const watch = this.watch(digest);
          const view = await watch.current();
          const state = view?.state;
          if (state?.phase === 'committed' && state.size !== undefined) {
            if (await fromContent(state.size)) continue;
            return controller.close();
          }
          // A failure counts only while it is the latest word (its writer is the last holder).
          if (state?.phase === 'failed' && state.token === view?.token) {
            throw state.failure ? errorOf(state.failure) : new OciError('UPSTREAM_INVALID');
          }
          const readable = state?.phase === 'verified' ? (state.size ?? state.stored) : (state?.stored ?? 0);
          if (state && pos < readable && (await fromParts(state, readable)) === 'opened') continue;
          if (view && view.holder === undefined) {
            if (++takeovers > MAX_RESUMES) throw new OciError('UPSTREAM_UNAVAILABLE', 'the upstream keeps breaking off this blob; try again later');
            // Free but not committed: the leader died or gave up. Take over from its parts.
            const led = await this.lead(digest, source, defer, undefined);
            if (led && led !== 'committed') {
              await this.untilStarted(led);
              local = led;
              continue;
            }
          }
          await watch.changed();
        }
      },
      cancel: async (reason) => {
        await inner?.cancel(reason).catch(() => undefined);
      },
    });
  }
}

/**
 * One process's view of a fill led elsewhere: one readLease at a time per digest, shared by
 * every follower in the process, polled with backoff while followers wait.
 */
class RemoteWatch {
  closed = false;
  private view: LeaseView<FillState & Json> | undefined;
  private readAt = 0;
  private interval = POLL_MIN_MS;
  private lastStored = -1;

  constructor(
    private readonly deps: FillDeps,
    private readonly digest: Digest,
    private readonly onClose: () => void,
  ) {}

  async current(): Promise<LeaseView<FillState & Json> | undefined> {
    if (!this.view) await this.refresh();
    return this.view;
  }

  /** Waits one poll interval (backing off while nothing moves), then reads the state again. */
  async changed(): Promise<void> {
    await this.deps.options.sleep(this.interval);
    await this.refresh();
  }

  /** Waits until the live holder's own state satisfies `done`, or the lease is free (then undefined). */
  async until(done: (state: FillState) => boolean): Promise<FillState | undefined> {
    await this.refresh();
    let renewedAt = 0;
    for (let waited = 0; ; ) {
      const view = this.view;
      if (view?.holder === undefined) {
        // Free: committed, or the last holder's failure (answered as is, not retried by every waiter).
        const last = view?.state;
        return last && (last.phase === 'committed' || (last.phase === 'failed' && last.token === view.token)) ? last : undefined;
      }
      const state = view.state?.token === view.token ? view.state : undefined;
      if (state && done(state)) return state;
      // Time counts only while the holder does not renew: one that rehashes a long prefix or
      // waits on slow upstream headers is alive, just not done.
      if (view.expiresAt !== renewedAt) {
        renewedAt = view.expiresAt;
        waited = 0;
      }
      if (waited > this.deps.options.leaseMs * 2) {
        throw new OciError('UPSTREAM_UNAVAILABLE', 'the instance fetching this blob is not making progress; try again');
      }
      waited += this.interval;
      await this.changed();
    }
  }

  /**
   * Reads the state again, unless another follower in this process read it within the last
   * POLL_MIN_MS. Each caller does its own read: a request never awaits another request's I/O
   * (workerd would cancel it as hung, or with the other request's end).
   */
  private async refresh(): Promise<void> {
    if (this.view !== undefined && Date.now() - this.readAt < POLL_MIN_MS) return;
    const view = await this.deps.ctx.index.readLease<FillState & Json>(keys.fill(this.digest.value));
    this.view = view;
    this.readAt = Date.now();
    const stored = view?.state?.stored ?? -1;
    this.interval = stored !== this.lastStored ? POLL_MIN_MS : Math.min(POLL_MAX_MS, this.interval * 2);
    this.lastStored = stored;
    if (view?.state?.phase === 'committed') {
      this.closed = true;
      this.onClose();
    }
  }
}

/** A fill this process leads: the download, the part writes, and the memory window its local followers read. */
class LocalFill {
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
    this.lease = lease;
    this.token = lease.token;
    const stored = resume?.stored ?? 0;
    this.state = {
      phase: 'filling',
      token: lease.token,
      source,
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
   * reaches a client whole).
   */
  slice(pos: number, end: number | undefined): Uint8Array | undefined {
    if (pos < this.windowStart || this.chunks.length === 0) return undefined;
    const last = this.chunks[this.chunks.length - 1]!;
    const readable = this.verified ? this.received : last.offset;
    const limit = end === undefined ? readable : Math.min(readable, end);
    if (pos >= limit) return undefined;
    const chunk = this.chunks.find((c) => c.offset <= pos && pos < c.offset + c.bytes.byteLength);
    if (!chunk) return undefined;
    return chunk.bytes.subarray(pos - chunk.offset, Math.min(chunk.bytes.byteLength, limit - chunk.offset));
  }

  async run(): Promise<void> {
    const { ctx, metrics, options } = this.deps;
    const heartbeat = setInterval(() => {
      void ctx.index.renewLease(this.lease, options.leaseMs).then(
        (renewed) => {
          if (renewed) this.lease = renewed;
          else void this.abort(new OciError('UPSTREAM_UNAVAILABLE', 'this instance lost the fill to another; try again'), false);
        },
        () => undefined,
      );
    }, Math.max(1000, Math.floor(options.leaseMs / 3)));
    try {
      const hash = await this.rehash();
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
      await this.compose();
      this.state = { ...this.state, phase: 'committed' };
      this.committed = true;
      clearInterval(heartbeat);
      const released = await ctx.index.releaseLease(this.lease, this.state as unknown as Json);
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

  /** Stops the fill; `release` gives the lease up now (with the state a successor needs). */
  private async abort(failure: OciError, release: boolean): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.failure = failure;
    this.markStarted();
    this.notify();
    if (!release) return;
    // The upstream lied (wrong digest or size) or refused: a successor must start afresh.
    // The stream merely broke off: a successor resumes from the stored parts.
    // Refused before any byte: followers answer with the same error, the parts stay for a retry.
    const state: FillState =
      failure.kind === 'UPSTREAM_INVALID'
        ? { ...this.state, phase: 'failed', stored: 0, segments: [], failure: recordOf(failure) }
        : !this.startedOk
          ? { ...this.state, phase: 'failed', failure: recordOf(failure) }
          : this.state;
    await this.deps.ctx.index.releaseLease(this.lease, state as unknown as Json).catch(() => false);
  }

  /** The upstream answered and the size is known: clients may be sent headers. */
  startedOk = false;

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
      if (this.size !== undefined && this.size > MAX_FILL_BYTES) {
        await answer.body.cancel().catch(() => undefined);
        throw new OciError('UPSTREAM_INVALID', `blob ${this.digest.value} is larger than the ${MAX_FILL_BYTES} byte limit of a fill`);
      }
      if (answer.offset > offset) {
        await answer.body.cancel().catch(() => undefined);
        throw new OciError('UPSTREAM_INVALID', `upstream "${this.source.upstream}" answered a range that starts after the one asked for`);
      }
      if (!this.startedOk) {
        this.startedOk = true;
        if (this.size !== undefined) this.state = { ...this.state, size: this.size };
        await this.update();
        this.markStarted();
      }
      // An upstream that ignores Range sends the blob from 0: skip what we already have.
      let skip = offset - answer.offset;
      const reader = answer.body.getReader();
      try {
        for (;;) {
          const next = await reader.read();
          if (next.done) break;
          let bytes = next.value;
          metrics.count('outpost_upstream_bytes_total', { upstream: this.source.upstream }, bytes.byteLength);
          if (skip > 0) {
            const n = Math.min(skip, bytes.byteLength);
            skip -= n;
            bytes = bytes.subarray(n);
          }
          if (bytes.byteLength === 0) continue;
          if (this.size !== undefined && this.received + bytes.byteLength > this.size) {
            throw new OciError('UPSTREAM_INVALID', `upstream "${this.source.upstream}" sent more than the ${this.size} bytes of ${this.digest.value}`);
          }
          if (this.received + bytes.byteLength > MAX_FILL_BYTES) {
            throw new OciError('UPSTREAM_INVALID', `blob ${this.digest.value} is larger than the ${MAX_FILL_BYTES} byte limit of a fill`);
          }
          if (this.stopped) throw this.failure ?? new OciError('UPSTREAM_UNAVAILABLE', 'the fill was stopped');
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
        if (resumes >= MAX_RESUMES) {
          throw new OciError('UPSTREAM_UNAVAILABLE', `upstream "${this.source.upstream}" kept breaking off ${this.digest.value}: ${String((err as Error)?.message ?? err).slice(0, 200)}`);
        }
        // The stream broke off: resume from what we have with a Range request.
        continue;
      }
      if (this.size !== undefined && this.received < this.size) {
        if (resumes >= MAX_RESUMES) {
          throw new OciError('UPSTREAM_UNAVAILABLE', `upstream "${this.source.upstream}" sent ${this.received} of ${this.size} bytes`);
        }
        continue;
      }
      return;
    }
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
    // Scratch: the parts are hashed again with the whole blob before anything is committed.
    const write = this.deps.ctx.store.put(key, streamOfChunks(chunks), length, { scratch: true }).then(async () => {
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

  /** Writes the state: one conditional write that succeeds only while this instance holds the lease. */
  private async update(): Promise<void> {
    const renewed = await this.deps.ctx.index.updateLease(this.lease, this.state as unknown as Json, this.deps.options.leaseMs);
    if (!renewed) throw new OciError('UPSTREAM_UNAVAILABLE', 'this instance lost the fill to another; try again');
    this.lease = renewed;
  }

  private async compose(): Promise<void> {
    const { store } = this.deps.ctx;
    const parts = partsOf(this.digest, this.state, this.received);
    const to = objects.content(this.digest);
    if (parts.length === 0) {
      await store.put(to, streamOfChunks([]), 0);
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
  return new OciError('INTERNAL', `the fill could not be stored: ${String((err as Error)?.message ?? err).slice(0, 200)}`);
}

/**
 * Bytes a part write is handed at a time: the window holds the upstream's small chunks (tens of
 * KiB), and one store write per chunk made part writes the bottleneck of a fill (a 256 MiB blob:
 * 4,000 file writes), so they are coalesced into pieces of this size.
 */
const WRITE_PIECE_BYTES = 1024 * 1024;

/**
 * A stream of `chunks` as copies coalesced into pieces of WRITE_PIECE_BYTES: copies, because the
 * store's runtime may detach what it is given (workerd does) while the window keeps serving
 * the originals to followers. It holds one piece at a time.
 */
function streamOfChunks(chunks: Uint8Array[]): ByteStream {
  let i = 0;
  let within = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      let left = 0;
      for (let j = i, w = within; j < chunks.length && left < WRITE_PIECE_BYTES; j++, w = 0) left += chunks[j]!.byteLength - w;
      if (left === 0) return controller.close();
      const piece = new Uint8Array(Math.min(left, WRITE_PIECE_BYTES));
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
}
