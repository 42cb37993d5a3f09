import { describe, expect, it } from 'vitest';
import type { MemoryBlobStore } from '../../src/adapters/memory/blob-store.js';
import { collect, type CollectOutcome } from '../../src/core/gc/collect.js';
import {
  addReference,
  contentState,
  hasReferences,
  listCandidates,
  prepareStore,
  references,
  STUCK_DELETING_MS,
} from '../../src/core/gc/references.js';
import { D, GRACE, REF, type ReferencesSubject } from './references.contract.js';
import { gate, hooked, isRefListing, isStateRead, isStateWrite, never, type Hook } from './references-fixture.js';

/**
 * The races of the reference protocol, forced step by step: a writer's add landing between any
 * two steps of a collecting run, two runs on one digest, and runs that crash (a call that never
 * returns) between any two of their steps, finished later by another run.
 */

const toDeleted = (m: string, a: unknown[]) => isStateWrite(m, a) && (a[2] as { state: string }).state === 'deleted';

export function referenceRacesContract(subject: () => Promise<ReferencesSubject>) {
  /** A collecting run whose index calls go through `hook`. */
  const run = (s: ReferencesSubject, hook: Hook, store: MemoryBlobStore = s.store) =>
    collect(s.over(hooked(s.fixture.index, hook), store), D, { graceMs: GRACE });
  /** A writer's add whose index calls go through `hook`. */
  const write = (s: ReferencesSubject, hook: Hook = () => undefined, ref = REF) =>
    addReference(s.over(hooked(s.fixture.index, hook)), D.value, ref);

  describe('a writer racing a collecting run', () => {
    it('put between the CAS into deleting and the listing: the run finds it', async () => {
      const s = await subject();
      await s.storeBytes();
      let added: unknown;
      const outcome = await run(s, async (m, a, phase) => {
        if (phase === 'before' && isRefListing(m, a) && !added) added = await write(s);
      });
      expect(added).toMatchObject({ held: true });
      expect(outcome).toBe('referenced');
      expect(s.present()).toBe(true);
      expect((await contentState(s.ports, D.value))?.value.state).toBe('live');
    });

    it('put before the listing, state read after the run ended: held, and the run kept it', async () => {
      const s = await subject();
      await s.storeBytes();
      const g = gate();
      let writer: Promise<unknown> | undefined;
      const outcome = await run(s, async (m, a, phase) => {
        if (phase !== 'before' || !isRefListing(m, a) || writer) return;
        writer = write(s, (wm, wa, wp) => (wp === 'before' && isStateRead(wm, wa) ? g.wait() : undefined));
        await g.reached;
      });
      g.open();
      expect(outcome).toBe('referenced');
      expect(await writer).toMatchObject({ held: true });
      expect(s.present()).toBe(true);
    });

    it('whole add between the listing and the final CAS: the writer revives it and the run loses', async () => {
      const s = await subject();
      await s.storeBytes();
      let added: unknown;
      const outcome = await run(s, async (m, a, phase) => {
        if (phase === 'before' && toDeleted(m, a) && !added) added = await write(s);
      });
      expect(added).toMatchObject({ held: true });
      expect(outcome).toBe('raced');
      expect(s.present()).toBe(true);
      expect((await contentState(s.ports, D.value))?.value.state).toBe('live');
      expect(await hasReferences(s.ports, D.value)).toBe(true);
    });

    for (const stop of ['state read', 'revive'] as const) {
      it(`put after the listing, ${stop} after the final CAS: the writer learns absent and takes its reference back`, async () => {
        const s = await subject();
        await s.storeBytes();
        const g = gate();
        let writer: Promise<unknown> | undefined;
        const at = stop === 'state read' ? isStateRead : isStateWrite;
        const outcome = await run(s, async (m, a, phase) => {
          if (phase !== 'before' || !toDeleted(m, a) || writer) return;
          writer = write(s, (wm, wa, wp) => (wp === 'before' && at(wm, wa) ? g.wait() : undefined));
          await g.reached;
        });
        expect(outcome).toBe('deleted');
        g.open();
        expect(await writer).toEqual({ held: false });
        expect(await hasReferences(s.ports, D.value)).toBe(false);
        expect(s.present()).toBe(false);
      });
    }

    it('a writer that found deleted never takes back the same reference made again by another (hole 1)', async () => {
      const s = await subject();
      await s.storeBytes();
      expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('deleted');
      const g = gate();
      const first = write(s, (m, a, phase) => (phase === 'before' && m === 'delete' && String((a[0] as { pk: string }).pk).startsWith('ref#') ? g.wait() : undefined));
      await g.reached;
      // Meanwhile the blob is pushed again and the same reference made again: held.
      await s.storeBytes({ age: 0 });
      expect(await write(s)).toMatchObject({ held: true });
      g.open();
      expect(await first).toEqual({ held: false });
      expect(await hasReferences(s.ports, D.value)).toBe(true);
      s.clock.advance(2 * GRACE);
      expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('referenced');
      expect(s.present()).toBe(true);
    });

    it('a writer that crashed after its put leaves the digest held (a leak, never a loss)', async () => {
      const s = await subject();
      await s.storeBytes();
      let reached!: () => void;
      const crashed = new Promise<void>((resolve) => (reached = resolve));
      void write(s, (m, a, phase) => {
        if (phase !== 'after' || m !== 'put' || !String((a[0] as { pk: string }).pk).startsWith('ref#')) return undefined;
        reached();
        return never();
      });
      await crashed;
      expect(await collect(s.ports, D, { graceMs: GRACE })).toBe('referenced');
      expect(s.present()).toBe(true);
    });
  });

  describe('two collecting runs on one digest', () => {
    it('at once: the bytes are deleted once', async () => {
      const s = await subject();
      await s.storeBytes();
      let deletes = 0;
      const counting = hooked(s.store, (m, _a, phase) => void (phase === 'before' && m === 'delete' && deletes++));
      const outcomes = await Promise.all([1, 2].map(() => collect(s.over(s.fixture.index, counting), D, { graceMs: GRACE })));
      expect(outcomes).toContain('deleted');
      expect(deletes).toBe(1);
      expect(s.present()).toBe(false);
    });

    it('the second run whole between any two steps of the first: one delete, and nothing left to do', async () => {
      const steps = await countSteps(await subject(), false);
      for (let k = 1; k <= steps; k++) {
        const s = await subject();
        await s.storeBytes();
        let deletes = 0;
        const counting = hooked(s.store, (m, _a, phase) => void (phase === 'before' && m === 'delete' && deletes++));
        let n = 0;
        let second: CollectOutcome | undefined;
        const first = await run(
          s,
          async (_m, _a, phase) => {
            if (phase === 'before' && ++n === k) second = await collect(s.over(s.fixture.index, counting), D, { graceMs: GRACE });
          },
          counting,
        );
        expect([first, second], `step ${k}`).toContain('deleted');
        expect(deletes, `step ${k}`).toBe(1);
        expect(s.present()).toBe(false);
        expect(await listCandidates(s.ports, { limit: 10 })).toEqual([]);
        s.clock.advance(STUCK_DELETING_MS);
        expect(['deleted', 'not-candidate']).toContain(await collect(s.ports, D, { graceMs: GRACE }));
        expect(await prepareStore(s.ports, D.value)).toEqual({ ready: true });
      }
    });
  });

  describe('a collecting run that crashes between any two steps', () => {
    for (const referenced of [false, true]) {
      for (const when of ['before', 'after'] as const) {
        it(`${referenced ? 'referenced' : 'unreferenced'}, crash ${when} each call: a later run finishes it correctly`, async () => {
          const steps = await countSteps(await subject(), referenced);
          for (let k = 1; k <= steps; k++) {
            const s = await subject();
            await s.storeBytes();
            if (referenced) await write(s, undefined, references.manifestLink('r'));
            let n = 0;
            let reached!: () => void;
            const crashed = new Promise<void>((resolve) => (reached = resolve));
            const crash: Hook = (_m, _a, phase) => {
              if (phase !== when || ++n !== k) return undefined;
              reached();
              return never();
            };
            // Until the run has crashed at step k (or ended, when it has fewer steps): a fixed
            // pause would let a slow adapter's run go on racing the later one.
            await Promise.race([crashed, run(s, crash, hooked(s.store, crash)).then(() => undefined, () => undefined)]);
            const state = (await contentState(s.ports, D.value))?.value.state ?? 'live';
            expect(['live', 'deleting', 'deleted'], `step ${k}`).toContain(state);
            if (referenced) expect(state, `step ${k}`).not.toBe('deleted');
            if (state !== 'deleted') expect(s.present(), `step ${k}`).toBe(true);

            s.clock.advance(STUCK_DELETING_MS);
            let later = await collect(s.ports, D, { graceMs: GRACE });
            if (referenced) {
              // Crashed after its CAS back to live (since = then): young, until the grace passes.
              if (later === 'young') {
                s.clock.advance(GRACE);
                later = await collect(s.ports, D, { graceMs: GRACE });
              }
              expect(['referenced', 'not-candidate'], `step ${k}`).toContain(later);
              expect(s.present(), `step ${k}`).toBe(true);
              expect((await contentState(s.ports, D.value))?.value.state, `step ${k}`).toBe('live');
            } else {
              expect(['deleted', 'not-candidate'], `step ${k}`).toContain(later);
              expect(s.present(), `step ${k}`).toBe(false);
              expect(await addReference(s.ports, D.value, REF), `step ${k}`).toEqual({ held: false });
            }
            expect(await listCandidates(s.ports, { limit: 10 }), `step ${k}`).toEqual([]);
          }
        });
      }
    }
  });
}

/** How many index and store calls one whole run makes on a fresh subject (unreferenced or referenced). */
async function countSteps(s: ReferencesSubject, referenced: boolean): Promise<number> {
  await s.storeBytes();
  if (referenced) await addReference(s.ports, D.value, references.manifestLink('r'));
  let n = 0;
  const count: Hook = (_m, _a, phase) => void (phase === 'before' && n++);
  await collect(s.over(hooked(s.fixture.index, count), hooked(s.store, count)), D, { graceMs: GRACE });
  return n;
}
