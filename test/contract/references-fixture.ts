import type { MetaIndex } from '../../src/ports/meta-index.js';
import { ReplyLost } from './meta-index-fixture.js';

/**
 * What the reference-protocol contract (references.contract.ts) runs on: an index adapter, and
 * ways to step in between the calls of one party (a writer, a collecting run) to force an
 * interleaving, lose a reply, or crash it (a call that never returns).
 */

/** How a write's reply goes missing: `throw` as a timeout does; `resend` as the SDK's retry does (the second answer wins). */
export type LossMode = 'throw' | 'resend';

export interface LossyIndex {
  index: MetaIndex;
  /** Loses the reply of the `nth` write from now on (1: the next one), after it was applied. */
  loseReply(nth?: number): void;
}

export interface ReferencesFixture {
  index: MetaIndex;
  /** An instance over the same storage losing replies where the adapter can (DynamoDB: the client); else lossyOf(index). */
  lossy?: (mode: LossMode) => LossyIndex;
  cleanup?: () => void | Promise<void>;
}

const WRITES = new Set<PropertyKey>(['put', 'putIfAbsent', 'compareAndSet', 'delete', 'add']);

/** Method-level lost replies: exact for an adapter whose every method is one atomic step. */
export function lossyOf(index: MetaIndex, mode: LossMode): LossyIndex {
  let countdown = 0;
  const lossy = new Proxy(index, {
    get(target, name, receiver) {
      const member = Reflect.get(target, name, receiver) as unknown;
      if (typeof member !== 'function' || !WRITES.has(name)) return member;
      const call = (args: unknown[]) => (member as (...a: unknown[]) => Promise<unknown>).apply(target, args);
      return async (...args: unknown[]) => {
        const result = await call(args);
        if (countdown === 0 || --countdown > 0) return result;
        if (mode === 'resend') return call(args);
        throw new ReplyLost();
      };
    },
  });
  return { index: lossy, loseReply: (nth = 1) => (countdown = nth) };
}

export type Hook = (method: string, args: unknown[], phase: 'before' | 'after') => void | Promise<void>;

/** `target` with `hook` awaited before and after each of its methods runs. */
export function hooked<T extends object>(target: T, hook: Hook): T {
  return new Proxy(target, {
    get(t, name, receiver) {
      const member = Reflect.get(t, name, receiver) as unknown;
      if (typeof member !== 'function') return member;
      return async (...args: unknown[]) => {
        await hook(String(name), args, 'before');
        const out = (await (member as (...a: unknown[]) => Promise<unknown>).apply(t, args)) as unknown;
        await hook(String(name), args, 'after');
        return out;
      };
    },
  });
}

/** A promise that never settles: the party that awaits it has crashed, as far as anyone can tell. */
export const never = () => new Promise<never>(() => undefined);

/**
 * A gate a party stops at until the test opens it. `reached` settles when the party arrives;
 * `open()` lets it through.
 */
export function gate() {
  let arrive!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((r) => (arrive = r));
  const opened = new Promise<void>((r) => (release = r));
  return {
    reached,
    open: () => release(),
    /** Called by the hook at the stopping point. */
    wait: () => {
      arrive();
      return opened;
    },
  };
}

/** Is this call a read of the content-state item (`get` of pk "content")? */
export const isStateRead = (method: string, args: unknown[]) => method === 'get' && (args[0] as { pk: string }).pk === 'content';
/** Is this call a write of the content-state item? */
export const isStateWrite = (method: string, args: unknown[]) =>
  (method === 'compareAndSet' || method === 'putIfAbsent') && (args[0] as { pk: string }).pk === 'content';
/** Is this call the listing of a digest's references? */
export const isRefListing = (method: string, args: unknown[]) => method === 'list' && String(args[0]).startsWith('ref#');
