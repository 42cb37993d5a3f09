import type { BlobStore } from '../../ports/blob-store.js';
import type { Clock } from '../../ports/clock.js';
import { allItems } from '../registry/pages.js';
import { MAX_LIST_LIMIT, type Item, type ItemKey, type Json, type MetaIndex } from '../../ports/meta-index.js';

/**
 * References: what keeps content (a blob or a manifest, stored once by digest) from garbage
 * collection, built from single-item writes only (no transactions, every write safe to retry).
 *
 * Items (MetaIndex pk / sk -> value; listed with the rest in core/registry/keys.ts):
 *   ref#<digest>   / <kind>:<repository>:<from>  -> { at }      one reference; its presence is the count
 *   content        / <digest>                    -> ContentState  live | deleting | deleted (absent = live)
 *   ref#<digest>   / ~unreferenced               -> { at }      when its last reference went (after every reference)
 *   gc#candidates#<bucket> / <digest>            -> { since }   may be unreferenced since `since` (GC's work list, 5-minute buckets)
 *   gc#buckets     / <bucket>                    -> {}          the buckets that may hold candidates
 * Kinds: link (blob or manifest present in a repository, hosted or mirrored, from = "blob" |
 * "manifest"; the link item keeps the reference's version), manifest (a manifest record names it
 * as config, layer or child; from = "<manifest digest>/<the record's nonce>"), writer (bytes
 * being stored, repository empty, expiring: holdForStore below). Repository names never contain
 * ':' unpercent-encoded (referenceSk), so the sort key splits at its first two colons; `from`
 * may hold more.
 *
 * Protocol (v = the item's version; `since` is the clock when the state was written):
 *
 *   addReference(d, r):                          writer, BEFORE the item that names d is written
 *     w  = put(ref#d/r)                           every add bumps the version (see hole 1 below)
 *     loop:
 *       s = get(content/d)
 *       absent | live          -> return held(w)
 *       deleting at v          -> compareAndSet(v -> live); ok: return held(w); else loop
 *       deleted                -> delete(ref#d/r, w); return absent
 *
 *   removeReference(d, r, w?):                   AFTER the item that named d stopped naming it
 *     delete(ref#d/r, w)                          w: only the reference the caller saw made
 *     if list(ref#d, limit 1) is empty: put(gc#candidates/d, { since: now })
 *
 *   prepareStore(d):                             BEFORE bytes are written at blobs/<d> (put, move, compose)
 *     loop:
 *       s = get(content/d)
 *       absent                     -> putIfAbsent(live, now); ok: break
 *       live | deleting at v       -> compareAndSet(v -> live, now); ok: break
 *       deleted, done or stale     -> compareAndSet(v -> live, now); ok: break
 *       deleted, fresh             -> return retry at since + STORE_AFTER_DELETE_MS
 *     put(gc#candidates/d, { since: now })        bytes no one links yet are garbage after the grace
 *
 *   collect(d) (collect.ts):                     GC, one candidate digest; me = a fresh run id
 *     c = get(gc#candidates/d); s = get(content/d)
 *     live|absent, c older than grace, s.since too -> CAS(v -> deleting{me, now})   (absent: putIfAbsent)
 *     deleting older than STUCK_DELETING_MS      -> CAS(v -> deleting{me, now})   (take over a crashed run)
 *     then: list(ref#d, limit 1) non-empty        -> CAS(deleting -> live); delete(c at its version); stop
 *           else CAS(deleting -> deleted{me, now}) (fails: a writer revived it; stop)
 *     deleted, not done, older than DELETE_WINDOW_MS -> CAS(v -> deleted{me, now})  (re-arm a crashed delete)
 *     then: if now <= since + DELETE_WINDOW_MS: BlobStore.delete(blobs/d); CAS(-> deleted{done}); delete(c)
 *   A CAS whose reply was lost (or that the client re-sent and then saw refused) is recognised as
 *   the run's own by re-reading: its version is expected + 1 and its `by` is me.
 *
 * Why a crash or a retried write between any two steps never deletes referenced content. A
 * reference is "held" when addReference returned held and removeReference has not been called;
 * callers write the item that names d only after held, and call remove only after that item is
 * gone, so every item that names d is covered by a held reference. The claim: bytes are deleted
 * only by a run whose CAS deleting(v) -> deleted won, and no reference is held then.
 *   1. Bytes are deleted only after a CAS into deleted; every such CAS starts from deleting or
 *      from a stale undone deleted (re-arm). A stale deleted holds no reference (6), and the
 *      re-arm's version change fences the old run's late "done" CAS.
 *   2. deleting(v) -> deleted wins only if nobody wrote content/d between the run's CAS into
 *      deleting(v) (time g1) and the final CAS (g3): a revive or a prepareStore writes v+1.
 *   3. A writer whose put(ref) came before the run's listing (g2) is seen by it: list is strongly
 *      consistent for writes that completed before it. The run then returns to live.
 *   4. A writer whose put(ref) came after g2 reads content/d afterwards, so after g1: it finds
 *      deleting(v) and its revive either wins (then the final CAS of 2 fails) or loses to the
 *      final CAS, and its re-read finds deleted; or it finds deleted. Either way it returns absent
 *      and never writes an item naming d. A writer that read live did so before g1, so its put
 *      came before g2 (3).
 *   5. A crash of the writer between put(ref) and its return leaves a reference with no item
 *      naming d: content is kept longer (a leak, never a loss) until a run that visits the digest
 *      finds the reference dangling (ReferenceCheck, older than REPAIR_AFTER_MS) and removes it.
 *      A lost reply of any step is retried from the top: put again (a new version), read the state again; the lost CAS shows
 *      as live on the re-read. The rollback delete carries the version the writer put, so it
 *      never removes the same reference re-made by a second writer meanwhile (hole 1).
 *   6. So in deleted no reference is held: those made before g2 were seen (3), those after
 *      returned absent (4). Bytes written again after deleted never meet that run's delete: a
 *      prepareStore needs the tombstone done (the delete returned) or older than the window the
 *      run has to send its delete in (collect checks its clock just before BlobStore.delete),
 *      plus the clock skew between instances: the one timing assumption, as for leases.
 *   7. A GC crash leaves live (nothing happened), deleting (any writer revives it; a later run
 *      takes it over after STUCK_DELETING_MS, fencing the old run by version, whose final CAS
 *      then fails), or deleted undone (bytes maybe still there: a later run re-arms after the
 *      window and deletes). The candidate item is removed only at its version and only once the
 *      digest is referenced or done, so a crash keeps the work listed.
 *   8. The grace period is not needed for 1-7; it protects bytes stored but not yet referenced
 *      (an upload between its store and its link; prepareStore writes since = now and notes a
 *      candidate), and a removed reference for a while. If a writer still outlives it, its
 *      addReference returns absent and it stores again: no loss, only a retry.
 *
 * Holes in the first sketch, closed here: (1) with putIfAbsent, two writers of one reference
 * share the item, and one that found deleted and rolled back removed the other's: refs are put
 * (a new version each time) and rolled back at that version. (2) A store of new bytes after
 * deleted could be hit by the collecting run's delete still in flight: prepareStore waits for
 * done or the window. (3) Absent state must be collectable: the run creates deleting with
 * putIfAbsent. (4) A lost reply of GC's own CAS stalled the digest: the run recognises its
 * write by `by`.
 */

/*
 * Writers (closing the holes a second read found in the first sketch, 2026-12-01):
 *
 *   holdForStore(d, w):                          BEFORE bytes are written at blobs/<d>
 *     v = put(ref#d/writer::<w>, expires now + WRITER_HOLD_MS)
 *     prepareStore(d)                              not ready: delete(ref, v); the caller retries later
 *     ... write the bytes, add the reference that will name them (held: the writer holds) ...
 *     release: removeReference(d, writer::<w>, v)
 *
 *   1. The bytes a writer stores are held from before prepareStore until its own reference is
 *      made, by the writer reference, not by the grace: a run that reaches deleted listed the
 *      references before the writer's put (3), so its CAS into deleting came before
 *      prepareStore, which then revives it or finds deleted and waits (6). The grace only
 *      protects bytes between a released hold and a client's first reference to them (an
 *      upload's bytes are linked inside the hold; a fill's are linked by the next pull).
 *   2. A writer that crashes leaves its reference to expire, and prepareStore's candidate: a
 *      run that meets only writer references (they sort last, so one list of one item tells)
 *      returns the state to live and keeps the candidate, so the bytes are collected after the
 *      writer's hold expires. The one timing assumption of a writer: it makes its own
 *      reference within WRITER_HOLD_MS, as a lease holder renews within its lease.
 *   3. The window check runs before BlobStore.delete, and a delete may still be in flight after
 *      it (adapter retries, a slow store): STORE_AFTER_DELETE_MS adds DELETE_IN_FLIGHT_MS,
 *      assumed to bound a store's delete call with its retries. The assumption is not enforced
 *      yet: the AWS SDK makes at most 3 attempts, but the S3 client sets no request timeout, so a
 *      delete stalled on a dead connection for longer would outlive it (open work: a timeout
 *      on the clients, or a deadline on BlobStore.delete).
 *
 * Tags and subjects make no references. A tag names a manifest of its repository, which the
 * manifest's link holds; deleting the manifest deletes its tags, and a tag left pointing at a
 * deleted manifest (a PUT racing the DELETE) reads as a miss. A subject is reachable only
 * through its own link: its referrers stay listed and servable, but keeping the subject's bytes
 * for them would keep bytes nothing can pull.
 */

/** Kinds sort as written here; `writer` must sort last (collect reads the first reference only). */
export type ReferenceKind = 'link' | 'manifest' | 'writer';

export interface Reference {
  kind: ReferenceKind;
  repository: string;
  from: string;
}

/** The references the registry makes, by what holds them. */
export const references = {
  blobLink: (repository: string): Reference => ({ kind: 'link', repository, from: 'blob' }),
  manifestLink: (repository: string): Reference => ({ kind: 'link', repository, from: 'manifest' }),
  /**
   * A config, layer or child manifest named by the record of `manifest` in `repository`; `nonce`
   * is that record's, made by its first write, so a DELETE of one record takes away only the
   * references its own write made and never those of a record written again meanwhile.
   */
  named: (repository: string, manifest: string, nonce: string): Reference => ({ kind: 'manifest', repository, from: `${manifest}/${nonce}` }),
  /** Bytes being written at the content key (holdForStore): expires with the hold. */
  writer: (id: string): Reference => ({ kind: 'writer', repository: '', from: id }),
};

export type ContentState =
  | { state: 'live'; since: number }
  | { state: 'deleting'; since: number; by: string }
  | { state: 'deleted'; since: number; by: string; done?: true };

export interface Candidate {
  digest: string;
  since: number;
  version: number;
  /** Where the candidate item is (its bucket). */
  key: ItemKey;
}

export type AddResult = { held: true; version: number } | { held: false };

export type StoreReadiness = { ready: true } | { ready: false; retryAt: number };

/** The ports the reference model works over. */
export interface GcPorts {
  index: MetaIndex;
  store: BlobStore;
  clock: Clock;
}

/**
 * How long after winning `deleted` a collecting run may still send its BlobStore.delete
 * (collect checks its clock right before): a run paused longer gives up and a later run re-arms.
 */
export const DELETE_WINDOW_MS = 60_000;

/** The clock skew between instances that the protocol tolerates (as leases do). */
export const MAX_CLOCK_SKEW_MS = 60_000;

/**
 * The longest a BlobStore.delete is assumed to stay in flight after it was sent, retries
 * included (see hole 3 above: not enforced by a client timeout yet).
 */
export const DELETE_IN_FLIGHT_MS = 5 * 60_000;

/** An undone tombstone this old can no longer be followed by its run's delete: new bytes may be written. */
export const STORE_AFTER_DELETE_MS = DELETE_WINDOW_MS + DELETE_IN_FLIGHT_MS + MAX_CLOCK_SKEW_MS;

/** When a collecting run may still be deleting within its window, a writer tries again this soon. */
export const RETRY_SOON_MS = 1000;

/**
 * How long a writer's hold lasts: it must make the reference that names its bytes within it (a
 * 64 GiB upload assembled from its parts at 50 MiB/s takes 22 minutes).
 */
export const WRITER_HOLD_MS = 6 * 60 * 60_000;

/**
 * How long a done tombstone is kept: longer than any writer pauses between putting its reference
 * and reading the state (one that then found the state absent would take it for live).
 */
export const TOMBSTONE_MS = 7 * 24 * 60 * 60_000;

/** A `deleting` this old belongs to a run that crashed or stalled; another run may take it over. */
export const STUCK_DELETING_MS = 5 * 60_000;

/**
 * Rounds of read-then-CAS before giving up: each lost round means another writer or a new GC
 * run changed the state in between, which settles within a few rounds.
 */
const MAX_STATE_ROUNDS = 8;

const REF_PREFIX = 'ref#';

/**
 * Candidates are kept in buckets of five minutes (gc#candidates#<bucket>, by when they were
 * noted), listed in gc#buckets. A run reads the buckets oldest first and skips those within the
 * grace; a bucket that a run settled whole, and that no note can land in any more (its end plus
 * the clock skew passed), leaves the directory, so the tombstones of its settled candidates are
 * never listed again: a run's listing costs the candidates of the last few minutes' buckets and
 * of the buckets still holding garbage, not every candidate ever settled. The directory's own
 * tombstones are at most one per bucket (288 a day), kept a week.
 */
export const CANDIDATE_BUCKET_MS = 5 * 60_000;
const BUCKETS_PARTITION = 'gc#buckets';

/**
 * In a digest's reference partition, after every reference (`~` sorts after the kinds): when its
 * last reference went. The grace counts from the latest removal, whichever bucket noted it.
 */
const UNREFERENCED_SK = '~unreferenced';

export const gcKeys = {
  refPartition: (digest: string) => `${REF_PREFIX}${digest}`,
  ref: (digest: string, ref: Reference): ItemKey => ({ pk: `${REF_PREFIX}${digest}`, sk: referenceSk(ref) }),
  unreferenced: (digest: string): ItemKey => ({ pk: `${REF_PREFIX}${digest}`, sk: UNREFERENCED_SK }),
  state: (digest: string): ItemKey => ({ pk: 'content', sk: digest }),
  candidate: (digest: string, since: number): ItemKey => ({ pk: bucketPartition(bucketOf(since)), sk: digest }),
  bucket: (bucket: string): ItemKey => ({ pk: BUCKETS_PARTITION, sk: bucket }),
};

/** The bucket of a time: buckets since the epoch, zero-padded so that they sort by time. */
export function bucketOf(time: number): string {
  return String(Math.max(0, Math.floor(time / CANDIDATE_BUCKET_MS))).padStart(12, '0');
}

export function bucketPartition(bucket: string): string {
  return `gc#candidates#${bucket}`;
}

/** When a bucket's notes start. */
export function bucketStart(bucket: string): number {
  return Number(bucket) * CANDIDATE_BUCKET_MS;
}

/**
 * `<kind>:<repository>:<from>`. A hosted name never holds ':' or '%', but a mirrored one may
 * (its namespace is a host, with a port: host:5000/library/app), so both are percent-encoded in
 * the repository: the key still splits at its first two colons.
 */
export function referenceSk(ref: Reference): string {
  return `${ref.kind}:${ref.repository.replace(/%/g, '%25').replace(/:/g, '%3A')}:${ref.from}`;
}

export function parseReferenceSk(sk: string): Reference {
  const a = sk.indexOf(':');
  const b = sk.indexOf(':', a + 1);
  if (a < 0 || b < 0) throw new TypeError(`not a reference sort key: ${sk}`);
  const repository = sk.slice(a + 1, b).replace(/%3A/g, ':').replace(/%25/g, '%');
  return { kind: sk.slice(0, a) as ReferenceKind, repository, from: sk.slice(b + 1) };
}

/**
 * Records that `ref` holds `digest`. Call before writing the item that names the digest; write it
 * only when the result is held. Absent: the content is deleted or being deleted (push: answer
 * MANIFEST_BLOB_UNKNOWN; mirror: fill again, through prepareStore). `version` is the reference's
 * version, for a removeReference that must take away only this making of it. Safe to retry from
 * the top after any failure.
 */
export async function addReference(ports: GcPorts, digest: string, ref: Reference): Promise<AddResult> {
  const { index, clock } = ports;
  const key = gcKeys.ref(digest, ref);
  const version = await index.put(key, { at: clock.now() });
  for (let round = 0; round < MAX_STATE_ROUNDS; round++) {
    const s = await readState(index, digest);
    if (!s || s.value.state === 'live') return { held: true, version };
    if (s.value.state === 'deleted') {
      await index.delete(key, version);
      return { held: false };
    }
    // deleting: revive it; the collecting run's final compare-and-set then fails.
    if ((await index.compareAndSet(gcKeys.state(digest), s.version, live(clock))) !== undefined) return { held: true, version };
  }
  throw new Error(`content state of ${digest} kept changing through ${MAX_STATE_ROUNDS} rounds`);
}

/**
 * Takes `ref` away from `digest`, after the item that named the digest stopped naming it; with
 * `version`, only if the reference is still the one made then (a writer that made it again since
 * keeps it). Notes the digest as a candidate when no reference is left. True when this call
 * removed it; false when it was gone already or made again. Idempotent.
 */
export async function removeReference(ports: GcPorts, digest: string, ref: Reference, version?: number): Promise<boolean> {
  const removed = await ports.index.delete(gcKeys.ref(digest, ref), version);
  // Checked whether or not this call removed it: a retry after a lost reply must still note it.
  if (!(await hasReferences(ports, digest))) {
    await ports.index.put(gcKeys.unreferenced(digest), { at: ports.clock.now() });
    await noteCandidate(ports, digest);
  }
  return removed;
}

/** Whether any reference holds `digest`. One strongly consistent read of one item. */
export async function hasReferences(ports: Pick<GcPorts, 'index'>, digest: string): Promise<boolean> {
  return (await firstReference(ports, digest)) !== undefined;
}

/**
 * The kind of the first reference of `digest` in sort order, or undefined when none holds it;
 * `writer` means only writers do (they sort last). One strongly consistent read.
 */
export async function firstReference(ports: Pick<GcPorts, 'index'>, digest: string): Promise<ReferenceKind | undefined> {
  const [first] = await ports.index.list(gcKeys.refPartition(digest), { limit: 1 });
  return first && first.sk !== UNREFERENCED_SK ? parseReferenceSk(first.sk).kind : undefined;
}

/**
 * Whether the item a reference stands for still names the digest (a link, a manifest record):
 * the registry's side of the repair in collect. A reference older than REPAIR_AFTER_MS whose
 * item does not is dangling (its writer died between the two steps, or an unlink or a delete
 * died before taking it away) and is removed, so a crash leaks bytes only until a run visits.
 */
export type ReferenceCheck = (digest: string, ref: ListedReference) => Promise<boolean>;

/**
 * A reference younger than this may belong to a writer between making it and writing the item
 * that names the digest: never taken for dangling. The timing assumption of writers (as
 * WRITER_HOLD_MS): a writer writes its item within this of making its reference.
 */
export const REPAIR_AFTER_MS = 6 * 60 * 60_000;

/** A writer's hold on content it is storing (holdForStore); release it once its own reference is made. */
export interface StoreHold {
  release(): Promise<void>;
}

/**
 * Holds `digest` for a writer about to store its bytes (the writers' protocol above): a writer
 * reference that expires after WRITER_HOLD_MS, then prepareStore. Not ready: nothing is held,
 * and the caller tries again at `retryAt` (a collecting run may still be deleting older bytes).
 */
export async function holdForStore(ports: GcPorts, digest: string, writer: string): Promise<({ ready: true } & StoreHold) | { ready: false; retryAt: number }> {
  const ref = references.writer(writer);
  const key = gcKeys.ref(digest, ref);
  const version = await ports.index.put(key, { at: ports.clock.now() }, { expiresAt: ports.clock.now() + WRITER_HOLD_MS });
  let readiness: StoreReadiness;
  try {
    readiness = await prepareStore(ports, digest);
  } catch (err) {
    await ports.index.delete(key, version).catch(() => undefined);
    throw err;
  }
  if (!readiness.ready) {
    await ports.index.delete(key, version);
    return readiness;
  }
  return { ready: true, release: async () => void (await removeReference(ports, digest, ref, version)) };
}

/** A reference as listed: its version, and when it was made (`at`, by the writer's clock). */
export type ListedReference = Reference & { version: number; at: number };

/** Every reference of `digest` in sort order, page by page (collect's repair, audits). */
export async function* listReferences(ports: Pick<GcPorts, 'index'>, digest: string): AsyncGenerator<ListedReference> {
  for await (const { sk, item } of allItems<{ at: number }>(ports.index, gcKeys.refPartition(digest))) {
    if (sk !== UNREFERENCED_SK) yield { ...parseReferenceSk(sk), version: item.version, at: item.value.at };
  }
}

/** The digest's collection state; undefined when it was never collected (it counts as live). */
export async function contentState(ports: Pick<GcPorts, 'index'>, digest: string): Promise<Item<ContentState> | undefined> {
  return readState(ports.index, digest);
}

/**
 * Lists `digest` for the collector: it may be unreferenced from `since` on. The candidate goes
 * into the bucket of `since`, then the bucket into the directory (in that order: a run that
 * drops a bucket it found empty does so at the version it read, so a note that came after the
 * read keeps it). Idempotent.
 */
export async function noteCandidate(ports: Pick<GcPorts, 'index' | 'clock'>, digest: string, since = ports.clock.now(), options: { ifAbsent?: boolean } = {}): Promise<boolean> {
  const key = gcKeys.candidate(digest, since);
  if (options.ifAbsent) {
    if (!(await ports.index.putIfAbsent(key, { since }))) return false;
  } else await ports.index.put(key, { since });
  await noteBucket(ports, bucketOf(since));
  return true;
}

/**
 * Buckets this process listed in the directory, the current one only: a run never drops a
 * bucket that notes may still land in (closedBucket), so a current one listed once stays listed.
 */
const listedBuckets = new WeakMap<object, string>();

async function noteBucket(ports: Pick<GcPorts, 'index' | 'clock'>, bucket: string): Promise<void> {
  const current = bucketOf(ports.clock.now()) === bucket;
  if (current && listedBuckets.get(ports.index) === bucket) return;
  await ports.index.put(gcKeys.bucket(bucket), {});
  if (current) listedBuckets.set(ports.index, bucket);
}

/** Whether no note can land in `bucket` any more, whatever the clocks of other instances say. */
export function closedBucket(bucket: string, now: number): boolean {
  return bucketStart(bucket) + CANDIDATE_BUCKET_MS + MAX_CLOCK_SKEW_MS < now;
}

/** The buckets that may hold candidates, oldest first, with the version each was read at. */
export async function listBuckets(ports: Pick<GcPorts, 'index'>): Promise<Array<{ bucket: string; version: number }>> {
  const out: Array<{ bucket: string; version: number }> = [];
  for await (const { sk, item } of allItems(ports.index, BUCKETS_PARTITION)) out.push({ bucket: sk, version: item.version });
  return out;
}

/** One page of a bucket's candidates in digest order, after `after`. */
export async function listBucket(ports: Pick<GcPorts, 'index'>, bucket: string, options: { after?: string; limit: number }): Promise<Candidate[]> {
  const page = await ports.index.list<{ since: number }>(bucketPartition(bucket), options);
  return page.map(({ sk, item }) => ({ digest: sk, since: item.value.since, version: item.version, key: { pk: bucketPartition(bucket), sk } }));
}

/** The first `limit` candidates, oldest bucket first (audits and tests; a run pages through listBucket). */
export async function listCandidates(ports: Pick<GcPorts, 'index'>, options: { limit: number }): Promise<Candidate[]> {
  const out: Candidate[] = [];
  for (const { bucket } of await listBuckets(ports)) {
    let after: string | undefined;
    while (out.length < options.limit) {
      const page = await listBucket(ports, bucket, { after, limit: Math.min(MAX_LIST_LIMIT, options.limit - out.length) });
      out.push(...page);
      if (page.length < MAX_LIST_LIMIT) break;
      after = page[page.length - 1]!.digest;
    }
  }
  return out;
}

/** The oldest candidate item of `digest` (collect without one in hand): one read per listed bucket. */
export async function findCandidate(ports: Pick<GcPorts, 'index'>, digest: string): Promise<Candidate | undefined> {
  for (const { bucket } of await listBuckets(ports)) {
    const key = { pk: bucketPartition(bucket), sk: digest };
    const item = await ports.index.get<{ since: number }>(key);
    if (item) return { digest, since: item.value.since, version: item.version, key };
  }
  return undefined;
}

/** When the digest's last reference went, as its removal recorded (undefined: never, or not since then). */
export async function unreferencedSince(ports: Pick<GcPorts, 'index'>, digest: string): Promise<number | undefined> {
  return (await ports.index.get<{ at: number }>(gcKeys.unreferenced(digest)))?.value.at;
}

/**
 * Makes `digest` live with since = now before new bytes are written at its content key, so that
 * no collecting run already past its listing can delete them and no run starts on them within
 * the grace period; notes a candidate, so bytes nobody links are collected later. Not ready
 * while a collecting run may still be deleting the old bytes (a tombstone younger than
 * STORE_AFTER_DELETE_MS and not done): write nothing, try again at `retryAt`. Safe to retry.
 */
export async function prepareStore(ports: GcPorts, digest: string): Promise<StoreReadiness> {
  const { index, clock } = ports;
  const key = gcKeys.state(digest);
  for (let round = 0; round < MAX_STATE_ROUNDS; round++) {
    const s = await readState(index, digest);
    let ok: boolean;
    if (!s) ok = await index.putIfAbsent(key, live(clock));
    else {
      const v = s.value;
      if (v.state === 'deleted' && !v.done && clock.now() < v.since + STORE_AFTER_DELETE_MS) {
        // A run within its window is most likely about to mark its delete done: try again soon.
        // Past the window it stalled, and only the window's end makes a store safe.
        const live = clock.now() < v.since + DELETE_WINDOW_MS;
        return { ready: false, retryAt: live ? clock.now() + RETRY_SOON_MS : v.since + STORE_AFTER_DELETE_MS };
      }
      ok = (await index.compareAndSet(key, s.version, live(clock))) !== undefined;
    }
    // Lost to another writer whose `live` came after our read: as fresh as ours would be, and the
    // grace counts from it just the same (30 stores of one digest at once must all succeed).
    const now = ok ? undefined : await readState(index, digest);
    if (ok || (now && now.value.state === 'live' && (!s || now.version > s.version))) {
      await noteCandidate(ports, digest);
      return { ready: true };
    }
  }
  throw new Error(`content state of ${digest} kept changing through ${MAX_STATE_ROUNDS} rounds`);
}

export function readState(index: MetaIndex, digest: string): Promise<Item<ContentState> | undefined> {
  return index.get<ContentState & Json>(gcKeys.state(digest));
}

function live(clock: Clock): ContentState & Json {
  return { state: 'live', since: clock.now() };
}
