import { OciError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { objects, keys } from '../registry/keys.js';
import type { Json } from '../../ports/meta-index.js';
import type { ByteStream } from '../../ports/blob-store.js';
import { errorOf } from './failures.js';
import { LocalFill } from './fill-leader.js';
import { LOCAL_TICK_MS, MAX_RESUMES, partsOf, type Defer, type FillDeps, type FillSource, type FillState } from './fill-state.js';
import { RemoteWatch } from './fill-watch.js';

/**
 * The most a client's stream takes from the leader's window at once (see LocalFill.slice): a
 * client that fell behind catches up in a few large writes, bounded so that one read never
 * copies much.
 */
const SERVE_BATCH_BYTES = 512 * 1024;

export type { Defer, FillDeps, FillSource, FillState, FillsOptions } from './fill-state.js';

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
 *          -> releaseLease(committed) -> delete the parts, only if the release answered true
 *          or, after a lost reply, readLease shows no holder, this token and "committed" (the
 *          token is larger after a takeover: the parts are left to the successor and to
 *          reclaim; so are they when the release never gets an answer, which is still a
 *          commit). A heartbeat answered "not yours" after the commit is no loss. Any
 *          updateLease that returns undefined means another instance took over: stop at once,
 *          write nothing more.
 *          A stream that breaks off is resumed with a Range request (a few times), then the
 *          lease is released as "filling" so the next request resumes from the stored parts.
 *          A part put or a state write that throws (the store or the index did not answer) is
 *          made again, three attempts in all, the part from the bytes still in the window;
 *          nothing is written once the fill has stopped (its lease lost or given up).
 * Follower: reads [pos, readable) where readable is what the holder says is stored (state) or,
 *          in the holder's own process, what is in its memory window; never the last part
 *          before "verified". When the lease is free and the fill not committed, a follower
 *          takes it over and becomes the leader from where the parts end.
 * Crashes: between a part put and its updateLease the part is orphaned (its key carries the
 *          dead holder's token; the successor writes its own keys): only bytes recorded in the
 *          state are ever read. Between verified and committed a successor composes again
 *          (compose is atomic and idempotent). After committed, parts are garbage (GC, by age).
 */

/** What `open` found: content to read from the store, or a stream that follows a fill. */
export type FillOpen = { kind: 'committed'; size: number } | { kind: 'following'; size?: number; body: ByteStream };

export class Fills {
  private readonly local = new Map<string, LocalFill>();
  private readonly watches = new Map<string, RemoteWatch>();

  /** Set by abandon(): this process is stopping and leads no more fills. */
  private stopping = false;

  constructor(private readonly deps: FillDeps) {}

  /**
   * Gives up every fill this process leads, because it is stopping (after its requests are
   * done): each releases its lease with what it stored, so that the next request on another
   * instance resumes from there at once rather than waiting for the lease to expire (a fill
   * already verified finishes its commit first). No fill is led here after this.
   */
  async abandon(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.local.values()].map((fill) => fill.abandon()));
  }

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
        return { kind: 'following', size: mine.size, body: this.follow(digest, source, start, end, defer, mine) };
      }
      // The content object is the truth: it is written only once verified, and it outlives the
      // fill's lease item (which housekeeping sweeps a week after the commit).
      const content = await ctx.store.stat(objects.content(digest));
      if (content) return { kind: 'committed', size: content.size };
      const view = await ctx.index.readLease<FillState & Json>(keys.fill(digest.value));
      if (view?.holder === undefined) {
        const led = await this.lead(digest, source, defer, sizeHint);
        if (led === 'committed') continue;
        if (led) {
          await this.untilStarted(led);
          if (led.failure) throw led.failure;
          return { kind: 'following', size: led.size, body: this.follow(digest, source, start, end, defer, led) };
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
      return { kind: 'following', size: first.size, body: this.follow(digest, source, start, end, defer) };
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
    if (this.stopping) throw new OciError('UPSTREAM_UNAVAILABLE', 'this instance is stopping; try again');
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
    const countServed = metrics.counter('outpost_served_bytes_total', { source: 'fill' });
    // This request's own timer for its waits on the local fill (see LOCAL_TICK_MS), one at a
    // time: a follower that keeps pace with its leader waits once per chunk, and a timer per
    // wait (thousands a blob, each outliving its wait) was work for the garbage collector.
    let ticking: Promise<void> | undefined;
    const tick = () =>
      (ticking ??= this.deps.options.sleep(LOCAL_TICK_MS).then(() => {
        ticking = undefined;
      }));
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
              countServed(next.value.byteLength);
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
            const shared = local.slice(pos, end, SERVE_BATCH_BYTES);
            if (shared) {
              // A copy where the runtime may detach what a response sends (see copyChunks).
              const slice = this.deps.options.copyChunks && !shared.copied ? shared.bytes.slice() : shared.bytes;
              pos += slice.byteLength;
              countServed(slice.byteLength);
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
            await Promise.race([local.changed(), tick()]);
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
