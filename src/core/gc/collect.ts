import type { Digest } from '../oci/digest.js';
import type { Item, Json } from '../../ports/meta-index.js';
import { objects } from '../registry/keys.js';
import {
  DELETE_WINDOW_MS,
  gcKeys,
  findCandidate,
  firstReference,
  listReferences,
  readState,
  REPAIR_AFTER_MS,
  STUCK_DELETING_MS,
  TOMBSTONE_MS,
  unreferencedSince,
  type Candidate,
  type ContentState,
  type GcPorts,
  type ReferenceCheck,
  type ReferenceKind,
} from './references.js';

/**
 * One collecting run over one candidate digest: the GC side of the protocol written at the top
 * of references.ts, which also argues its safety. Each transition is one conditional write:
 *
 *   found                     | when                                      | write                               | then
 *   --------------------------+-------------------------------------------+-------------------------------------+-------------
 *   no candidate, live/absent | -                                         | -                                   | not-candidate
 *   live / absent             | candidate and state since younger than grace | -                                | young
 *   live at v / absent        | both older than the grace                 | CAS v -> deleting{me} / putIfAbsent | list refs
 *   deleting, fresh           | younger than STUCK_DELETING_MS            | -                                   | busy
 *   deleting at v, stuck      | older than STUCK_DELETING_MS              | CAS v -> deleting{me, now}          | list refs
 *   deleting{me} at v         | a reference exists                        | CAS v -> live; delete candidate@c   | referenced
 *   deleting{me} at v         | only writers' (expiring) references       | CAS v -> live; candidate kept       | writing
 * With a ReferenceCheck, "a reference exists" means one whose item still names the digest: the
 * dangling ones older than REPAIR_AFTER_MS are deleted on the way (at their version), and ones
 * too young to judge count as writers'.
 *   deleting{me} at v         | none                                      | CAS v -> deleted{me, now}           | delete bytes
 *   deleted, not done, fresh  | younger than DELETE_WINDOW_MS             | -                                   | busy
 *   deleted at v, not done    | older (its run crashed or stalled)        | CAS v -> deleted{me, now}           | delete bytes
 *   deleted{me} at v          | clock still within its window             | BlobStore.delete; CAS v -> done     | deleted
 *   deleted{me} at v          | the window passed (this run stalled)      | -                                   | stalled
 *   deleted, done             | -                                         | delete candidate@c                  | deleted
 * Any CAS that fails (and is not found to be this run's own on a re-read) ends the run with
 * `raced`: someone else moved the digest on, and the candidate stays for the next run.
 */

export type CollectOutcome =
  /** Nothing lists it as a candidate and no run left it half done. */
  | 'not-candidate'
  /** Unreferenced, or stored, more recently than the grace period. */
  | 'young'
  /** Another run is at work on it (or was, recently enough that it may still be). */
  | 'busy'
  /** A reference holds it: back to live, and no longer a candidate. */
  | 'referenced'
  /** Only writers hold it (they expire): back to live, still a candidate. */
  | 'writing'
  /** A writer or another run changed the state first. */
  | 'raced'
  /** This run paused past its delete window before deleting; a later run finishes. */
  | 'stalled'
  /** Its bytes are deleted (by this run or an earlier one). */
  | 'deleted';

export interface CollectOptions {
  /** Content unreferenced (or stored) for less than this is kept. */
  graceMs: number;
  /** The time the grace is measured against; the ports' clock by default. */
  now?: number;
  /** Names this run in the states it writes; a fresh id by default. */
  runId?: string;
  /** The candidate item a run listed; found by digest (the oldest) when absent. */
  candidate?: Candidate;
  /** Told the size of the bytes this run is about to delete (undefined: none were there), before the delete. */
  deleting?: (size: number | undefined) => void;
  /** Repairs dangling references on the way (references.ts ReferenceCheck); without it any reference holds. */
  check?: ReferenceCheck;
}

/**
 * The first reference that holds `digest`, removing the dangling ones before it: 'writer' when
 * only writers, or references too young to judge whose item is not there yet, hold it (the
 * candidate stays); undefined when none does.
 */
async function checkedReference(ports: GcPorts, digest: string, check: ReferenceCheck): Promise<ReferenceKind | undefined> {
  let pending = false;
  for await (const ref of listReferences(ports, digest)) {
    if (ref.kind === 'writer') return 'writer';
    if (await check(digest, ref)) return ref.kind;
    if (ports.clock.now() - ref.at < REPAIR_AFTER_MS) pending = true;
    else await ports.index.delete(gcKeys.ref(digest, ref), ref.version);
  }
  return pending ? 'writer' : undefined;
}

export async function collect(ports: GcPorts, digest: Digest, options: CollectOptions): Promise<CollectOutcome> {
  const { index, clock } = ports;
  const me = options.runId ?? crypto.randomUUID();
  const d = digest.value;
  const stateKey = gcKeys.state(d);
  const candidate = options.candidate ?? (await findCandidate(ports, d));
  const [found, unreferenced] = await Promise.all([readState(index, d), unreferencedSince(ports, d)]);
  const now = options.now ?? clock.now();

  // Settles the candidate item at the version read, so a newer note (a reference removed, bytes
  // stored again meanwhile) survives.
  const dropCandidate = async () => {
    if (candidate) await index.delete(candidate.key, candidate.version);
  };

  /** CAS that counts a write of this run whose reply was lost (or re-sent and refused) as done. */
  const cas = async (version: number, value: ContentState): Promise<number | undefined> => {
    const written = await index.compareAndSet(stateKey, version, value as ContentState & Json);
    if (written !== undefined) return written;
    const again = await readState(index, d);
    return again && mine(again, me, value.state, version + 1) ? again.version : undefined;
  };

  let deleting: number | undefined;
  let deleted: { version: number; since: number } | undefined;
  const v = found?.value;
  if (!v || v.state === 'live') {
    if (!candidate) return 'not-candidate';
    // The latest of: this note, the last store (the state), the last reference's removal (which
    // may have noted the digest in a later bucket too).
    const since = Math.max(candidate.since, v?.since ?? -Infinity, unreferenced ?? -Infinity);
    if (now - since < options.graceMs) return 'young';
    const value: ContentState = { state: 'deleting', since: clock.now(), by: me };
    if (found) deleting = await cas(found.version, value);
    else if (await index.putIfAbsent(stateKey, value as ContentState & Json)) deleting = 1;
    else {
      const again = await readState(index, d);
      deleting = again && mine(again, me, 'deleting', 1) ? again.version : undefined;
    }
    if (deleting === undefined) return 'raced';
  } else if (v.state === 'deleting') {
    if (clock.now() - v.since < STUCK_DELETING_MS) return 'busy';
    deleting = await cas(found!.version, { state: 'deleting', since: clock.now(), by: me });
    if (deleting === undefined) return 'raced';
  } else if (v.done) {
    await dropCandidate();
    return 'deleted';
  } else {
    if (clock.now() - v.since < DELETE_WINDOW_MS) return 'busy';
    const since = clock.now();
    const version = await cas(found!.version, { state: 'deleted', since, by: me });
    if (version === undefined) return 'raced';
    deleted = { version, since };
  }

  if (deleting !== undefined) {
    const held = options.check ? await checkedReference(ports, d, options.check) : await firstReference(ports, d);
    if (held !== undefined) {
      // Whoever wins, the state leaves this run's deleting; a failed CAS means a writer revived it.
      await index.compareAndSet(stateKey, deleting, { state: 'live', since: clock.now() });
      // Writers' holds expire, and one that crashed leaves no other note: keep the candidate.
      if (held === 'writer') return 'writing';
      await dropCandidate();
      return 'referenced';
    }
    const since = clock.now();
    const version = await cas(deleting, { state: 'deleted', since, by: me });
    if (version === undefined) return 'raced';
    deleted = { version, since };
  }

  if (options.deleting) options.deleting((await ports.store.stat(objects.content(digest)))?.size);
  // No new bytes can be written at the key until this tombstone is done or older than the
  // window plus the clock skew (prepareStore), so a delete sent within the window hits only the
  // bytes this run decided on.
  if (clock.now() > deleted!.since + DELETE_WINDOW_MS) return 'stalled';
  await ports.store.delete(objects.content(digest));
  // A done tombstone outlives any writer still between its reference and its read of the state
  // (that writer must find deleted, not absent, which reads as live); then it goes by itself.
  await index.compareAndSet(stateKey, deleted!.version, { state: 'deleted', since: deleted!.since, by: me, done: true }, { expiresAt: clock.now() + TOMBSTONE_MS });
  await dropCandidate();
  await index.delete(gcKeys.unreferenced(d));
  return 'deleted';
}

function mine(item: Item<ContentState>, me: string, state: ContentState['state'], version: number): boolean {
  return item.version === version && item.value.state === state && 'by' in item.value && item.value.by === me;
}
