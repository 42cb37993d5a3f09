import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { collect } from '../../src/core/gc/collect.js';
import {
  addReference,
  contentState,
  DELETE_WINDOW_MS,
  firstReference,
  gcKeys,
  hasReferences,
  holdForStore,
  listCandidates,
  listReferences,
  noteCandidate,
  prepareStore,
  references,
  removeReference,
  RETRY_SOON_MS,
  STORE_AFTER_DELETE_MS,
  STUCK_DELETING_MS,
  WRITER_HOLD_MS,
  type GcPorts,
} from '../../src/core/gc/references.js';
import { parseDigest } from '../../src/core/oci/digest.js';
import { objects } from '../../src/core/registry/keys.js';
import { streamOf } from '../../src/core/streams.js';
import type { MetaIndex } from '../../src/ports/meta-index.js';
import { TestClock } from '../support/clock.js';
import { ReplyLost } from './meta-index-fixture.js';
import { lossyOf, type LossMode, type ReferencesFixture } from './references-fixture.js';
import { referenceRacesContract } from './references-races.contract.js';

/**
 * The reference protocol (src/core/gc/references.ts, collect.ts) over every index adapter:
 * retries after lost replies, GC against references, forced interleavings of a writer and
 * collecting runs, and crashes between any two steps (references-races.contract.ts).
 * Time moves only through the TestClock.
 */

export const GRACE = 60 * 60_000;
export const D = parseDigest(`sha256:${'ab'.repeat(32)}`);
export const REF = references.blobLink('library/alpine');

export interface ReferencesSubject {
  clock: TestClock;
  fixture: ReferencesFixture;
  store: MemoryBlobStore;
  ports: GcPorts;
  lossy: (mode: LossMode) => ReturnType<typeof lossyOf>;
  /** The ports with another index in place (a wrapped one). */
  over: (index: MetaIndex, store?: MemoryBlobStore) => GcPorts;
  /** Stores bytes for D the way a push does (prepareStore, then the put), and lets the grace pass. */
  storeBytes: (options?: { age?: number }) => Promise<void>;
  present: () => boolean;
}

export function referencesContract(label: string, make: (clock: TestClock) => ReferencesFixture | Promise<ReferencesFixture>) {
  describe(`reference protocol: ${label}`, () => {
    let s: ReferencesSubject;
    const made: ReferencesFixture[] = [];

    /** A fresh index (and store) to run one scenario on; all are cleaned up after the test. */
    async function fresh(): Promise<ReferencesSubject> {
      const clock = new TestClock();
      const fixture = await make(clock);
      made.push(fixture);
      const store = new MemoryBlobStore(clock);
      const over = (index: MetaIndex, st = store): GcPorts => ({ index, store: st, clock });
      const ports = over(fixture.index);
      return {
        clock,
        fixture,
        store,
        ports,
        over,
        lossy: (mode) => fixture.lossy?.(mode) ?? lossyOf(fixture.index, mode),
        async storeBytes({ age = GRACE } = {}) {
          expect(await prepareStore(ports, D.value)).toEqual({ ready: true });
          await store.put(objects.content(D), streamOf(new Uint8Array([1, 2, 3])), 3);
          clock.advance(age);
        },
        present: () => store.objects.has(objects.content(D)),
      };
    }

    beforeEach(async () => {
      s = await fresh();
    });
    afterEach(async () => {
      for (const fixture of made.splice(0)) await fixture.cleanup?.();
    });

    describe('adding and removing', () => {
      it('holds the digest while a reference exists and lists a candidate when the last goes', async () => {
        const { ports } = s;
        expect(await hasReferences(ports, D.value)).toBe(false);
        const a = await addReference(ports, D.value, REF);
        expect(a).toMatchObject({ held: true });
        await addReference(ports, D.value, references.named('library/alpine', `sha256:${'e'.repeat(64)}`, 'n1'));
        expect(await hasReferences(ports, D.value)).toBe(true);
        const listed = [];
        for await (const r of listReferences(ports, D.value)) listed.push({ kind: r.kind, repository: r.repository, from: r.from });
        expect(listed).toEqual([REF, references.named('library/alpine', `sha256:${'e'.repeat(64)}`, 'n1')]);
        expect(await removeReference(ports, D.value, REF)).toBe(true);
        expect(await listCandidates(ports, { limit: 10 })).toEqual([]);
        expect(await removeReference(ports, D.value, references.named('library/alpine', `sha256:${'e'.repeat(64)}`, 'n1'))).toBe(true);
        expect(await hasReferences(ports, D.value)).toBe(false);
        expect(await listCandidates(ports, { limit: 10 })).toMatchObject([{ digest: D.value, since: s.clock.now() }]);
      });

      it('keeps a mirrored repository name with a port (host:5000/...) whole in the sort key', async () => {
        const mirrored = references.named('registry.local:5000/library/a%b', `sha256:${'cd'.repeat(32)}`, 'n1');
        expect(await addReference(s.ports, D.value, mirrored)).toMatchObject({ held: true });
        const listed = [];
        for await (const r of listReferences(s.ports, D.value)) listed.push(r);
        expect(listed).toMatchObject([mirrored]);
        expect(await removeReference(s.ports, D.value, mirrored)).toBe(true);
        expect(await hasReferences(s.ports, D.value)).toBe(false);
      });

      it('prepares a store for every one of 30 writers of one digest at once', async () => {
        const results = await Promise.all(Array.from({ length: 30 }, () => prepareStore(s.ports, D.value)));
        expect(results).toEqual(Array(30).fill({ ready: true }));
        expect((await contentState(s.ports, D.value))?.value.state).toBe('live');
      });

      it('removes only the making of a reference it names by version; one made again stays', async () => {
        const first = await addReference(s.ports, D.value, REF);
        const again = await addReference(s.ports, D.value, REF);
        expect(first.held && again.held && again.version > first.version).toBe(true);
        expect(await removeReference(s.ports, D.value, REF, first.held ? first.version : 0)).toBe(false);
        expect(await hasReferences(s.ports, D.value)).toBe(true);
      });

      for (const mode of ['throw', 'resend'] as const) {
        it(`adds once when the put's reply is lost (${mode}) and the add is retried`, async () => {
          const lossy = s.lossy(mode);
          lossy.loseReply();
          const ports = s.over(lossy.index);
          if (mode === 'throw') {
            await expect(addReference(ports, D.value, REF)).rejects.toThrow(ReplyLost);
            expect(await hasReferences(s.ports, D.value)).toBe(true);
          }
          expect(await addReference(ports, D.value, REF)).toMatchObject({ held: true });
          expect(await s.fixture.index.list(gcKeys.refPartition(D.value), { limit: 10 })).toHaveLength(1);
        });

        it(`removes once when the delete's reply is lost (${mode}), and still notes the candidate`, async () => {
          await addReference(s.ports, D.value, REF);
          const lossy = s.lossy(mode);
          lossy.loseReply();
          const ports = s.over(lossy.index);
          if (mode === 'throw') await expect(removeReference(ports, D.value, REF)).rejects.toThrow(ReplyLost);
          else expect(await removeReference(ports, D.value, REF)).toBe(false); // the re-sent delete found it gone
          expect(await removeReference(ports, D.value, REF)).toBe(false);
          expect(await hasReferences(s.ports, D.value)).toBe(false);
          expect(await listCandidates(s.ports, { limit: 10 })).toMatchObject([{ digest: D.value }]);
        });

        it(`revives a deleting digest once when the revive's reply is lost (${mode})`, async () => {
          await s.storeBytes();
          const st = await s.fixture.index.get(gcKeys.state(D.value));
          await s.fixture.index.compareAndSet(gcKeys.state(D.value), st!.version, { state: 'deleting', since: s.clock.now(), by: 'gc' });
          const lossy = s.lossy(mode);
          lossy.loseReply(2); // the put of the reference applies and answers; the revive's answer is lost
          const ports = s.over(lossy.index);
          if (mode === 'throw') await expect(addReference(ports, D.value, REF)).rejects.toThrow(ReplyLost);
          expect(await addReference(ports, D.value, REF)).toMatchObject({ held: true });
          expect((await contentState(s.ports, D.value))?.value.state).toBe('live');
          expect(await collect(s.ports, D, { graceMs: 0 })).toBe('referenced');
          expect(s.present()).toBe(true);
        });
      }
    });

    describe('collecting', () => {
      it('never deletes a digest with a reference, of any kind', async () => {
        const held = [
          references.blobLink('r'),
          references.manifestLink('r'),
          references.named('r', `sha256:${'c'.repeat(64)}`, 'n1'),
          references.blobLink('docker.io/library/alpine'),
        ];
        for (const ref of held) {
          await s.storeBytes();
          await addReference(s.ports, D.value, ref);
          await noteCandidate(s.ports, D.value, 0);
          expect(await collect(s.ports, D, { graceMs: GRACE }), ref.kind).toBe('referenced');
          expect(s.present()).toBe(true);
          expect((await contentState(s.ports, D.value))?.value.state).toBe('live');
          // The candidate it was given is settled (the store's own, in a later bucket, waits for its visit).
          expect((await listCandidates(s.ports, { limit: 10 })).filter((c) => c.since === 0)).toEqual([]);
          await removeReference(s.ports, D.value, ref);
        }
        s.clock.advance(GRACE);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
        expect(s.present()).toBe(false);
      });

      it('keeps content stored or unreferenced within the grace period', async () => {
        await s.storeBytes({ age: GRACE - 1 });
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('young');
        await addReference(s.ports, D.value, REF);
        await removeReference(s.ports, D.value, REF);
        s.clock.advance(GRACE - 1);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('young');
        s.clock.advance(1);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
        expect(s.present()).toBe(false);
        // Noted when stored and when unreferenced, perhaps in two buckets: each visit settles one.
        for (let i = 0; i < 3 && (await listCandidates(s.ports, { limit: 10 })).length > 0; i++) {
          expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
        }
        expect(await listCandidates(s.ports, { limit: 10 })).toEqual([]);
        expect((await contentState(s.ports, D.value))?.value).toMatchObject({ state: 'deleted', done: true });
      });

      it('collects content that never had a state item (stored before the protocol)', async () => {
        await s.store.put(objects.content(D), streamOf(new Uint8Array([9])), 1);
        expect(await collect(s.ports, D, { graceMs: 0 })).toBe('not-candidate');
        await noteCandidate(s.ports, D.value, s.clock.now() - GRACE);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
        expect(s.present()).toBe(false);
      });

      it('answers absent to a writer after the deletion, and takes new bytes at once when the delete was done', async () => {
        await s.storeBytes();
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
        expect(await addReference(s.ports, D.value, REF)).toEqual({ held: false });
        expect(await hasReferences(s.ports, D.value)).toBe(false);
        await s.storeBytes({ age: 0 });
        expect(await addReference(s.ports, D.value, REF)).toMatchObject({ held: true });
        s.clock.advance(2 * GRACE);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('referenced');
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('not-candidate');
        expect(s.present()).toBe(true);
      });

      for (const mode of ['throw', 'resend'] as const) {
        it(`finishes when the reply of each of its state writes is lost (${mode})`, async () => {
          for (const nth of [1, 2, 3]) {
            await s.storeBytes();
            const lossy = s.lossy(mode);
            lossy.loseReply(nth); // 1: live -> deleting, 2: deleting -> deleted, 3: -> done
            const run = collect(s.over(lossy.index), D, { graceMs: GRACE });
            if (mode === 'resend') expect(await run, `write ${nth}`).toBe('deleted');
            else {
              await expect(run).rejects.toThrow(ReplyLost);
              s.clock.advance(STUCK_DELETING_MS);
              expect(await collect(s.ports, D, { graceMs: GRACE }), `write ${nth}`).toBe('deleted');
            }
            expect(s.present(), `write ${nth}`).toBe(false);
            expect(await listCandidates(s.ports, { limit: 10 })).toEqual([]);
          }
        });
      }

      it('leaves a fresh deleting or an undone tombstone to its run, and takes over a stuck one', async () => {
        await s.storeBytes();
        const key = gcKeys.state(D.value);
        const st = await s.fixture.index.get(key);
        await s.fixture.index.compareAndSet(key, st!.version, { state: 'deleting', since: s.clock.now(), by: 'crashed' });
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('busy');
        s.clock.advance(STUCK_DELETING_MS);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
      });

      it('makes new bytes wait while a tombstone is not done and its run may still be deleting', async () => {
        await s.storeBytes();
        const key = gcKeys.state(D.value);
        const st = await s.fixture.index.get(key);
        const since = s.clock.now();
        await s.fixture.index.compareAndSet(key, st!.version, { state: 'deleted', since, by: 'paused' });
        // Within the run's window: it is most likely about to finish, so soon; past it, at the window's end.
        expect(await prepareStore(s.ports, D.value)).toEqual({ ready: false, retryAt: since + RETRY_SOON_MS });
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('busy');
        s.clock.advance(DELETE_WINDOW_MS);
        expect(await prepareStore(s.ports, D.value)).toEqual({ ready: false, retryAt: since + STORE_AFTER_DELETE_MS });
        // The paused run's window is over: a later run re-arms and deletes (the bytes are still there).
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
        expect(s.present()).toBe(false);
        expect(await prepareStore(s.ports, D.value)).toEqual({ ready: true });
      });

      it('gives up deleting when its own run paused past the delete window', async () => {
        await s.storeBytes();
        const ports = s.over(
          s.fixture.index,
          new Proxy(s.store, {
            get: (t, name, r) => (name === 'delete' ? async () => undefined : Reflect.get(t, name, r)),
          }),
        );
        // Pause the run between winning `deleted` and sending its delete.
        const paused = hookedClock(s, DELETE_WINDOW_MS + 1);
        expect(await collect({ ...ports, index: paused }, D, { graceMs: GRACE })).toBe('stalled');
        expect(s.present()).toBe(true);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
        expect(s.present()).toBe(false);
      });
    });

    describe('writers', () => {
      it('holds bytes from before the store until the writer made its own reference, whatever the grace', async () => {
        const hold = await holdForStore(s.ports, D.value, 'upload:1');
        expect(hold.ready).toBe(true);
        await s.store.put(objects.content(D), streamOf(new Uint8Array([1, 2, 3])), 3);
        // A run with no grace meets only the writer: the bytes stay and so does the candidate.
        expect(await collect(s.ports, D, { graceMs: 0 })).toBe('writing');
        expect(await listCandidates(s.ports, { limit: 10 })).toMatchObject([{ digest: D.value }]);
        expect(await addReference(s.ports, D.value, REF)).toMatchObject({ held: true });
        if (hold.ready) await hold.release();
        expect(await firstReference(s.ports, D.value)).toBe('link');
        expect(await collect(s.ports, D, { graceMs: 0 })).toBe('referenced');
        expect(s.present()).toBe(true);
      });

      it('collects the bytes of a writer that crashed once its hold expired', async () => {
        expect((await holdForStore(s.ports, D.value, 'fill:7')).ready).toBe(true);
        await s.store.put(objects.content(D), streamOf(new Uint8Array([1, 2, 3])), 3);
        s.clock.advance(GRACE);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('writing');
        s.clock.advance(WRITER_HOLD_MS - GRACE - 1);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('writing');
        s.clock.advance(1);
        // Each visit while the writer held it restarted the grace.
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('young');
        s.clock.advance(GRACE);
        expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
        expect(s.present()).toBe(false);
      });

      it('revives a digest a run is deleting, so the run cannot delete what the writer stores', async () => {
        await s.storeBytes();
        const key = gcKeys.state(D.value);
        const st = await s.fixture.index.get(key);
        await s.fixture.index.compareAndSet(key, st!.version, { state: 'deleting', since: s.clock.now(), by: 'run' });
        const hold = await holdForStore(s.ports, D.value, 'upload:2');
        expect(hold.ready).toBe(true);
        expect((await contentState(s.ports, D.value))?.value.state).toBe('live');
        if (hold.ready) await hold.release();
      });

      it('holds nothing while a tombstone may still be followed by its delete', async () => {
        await s.storeBytes();
        const key = gcKeys.state(D.value);
        const st = await s.fixture.index.get(key);
        await s.fixture.index.compareAndSet(key, st!.version, { state: 'deleted', since: s.clock.now(), by: 'paused' });
        expect(await holdForStore(s.ports, D.value, 'upload:3')).toMatchObject({ ready: false });
        expect(await hasReferences(s.ports, D.value)).toBe(false);
      });

      it('a writer sorts after every other kind, so one read tells whether only writers hold a digest', async () => {
        expect((await holdForStore(s.ports, D.value, 'a')).ready).toBe(true);
        expect(await firstReference(s.ports, D.value)).toBe('writer');
        await addReference(s.ports, D.value, references.named('z/z', `sha256:${'f'.repeat(64)}`, 'n'));
        expect(await firstReference(s.ports, D.value)).toBe('manifest');
        await addReference(s.ports, D.value, references.manifestLink('zzz'));
        expect(await firstReference(s.ports, D.value)).toBe('link');
      });
    });

    referenceRacesContract(fresh);
  });
}

/** The subject's index, advancing the clock by `ms` right after the CAS into `deleted` applies. */
function hookedClock(s: ReferencesSubject, ms: number): MetaIndex {
  return new Proxy(s.fixture.index, {
    get(t, name, r) {
      const member = Reflect.get(t, name, r) as unknown;
      if (name !== 'compareAndSet') return typeof member === 'function' ? (member as () => unknown).bind(t) : member;
      return async (...args: Parameters<MetaIndex['compareAndSet']>) => {
        const out = await t.compareAndSet(...args);
        if ((args[2] as { state?: string }).state === 'deleted') s.clock.advance(ms);
        return out;
      };
    },
  });
}
