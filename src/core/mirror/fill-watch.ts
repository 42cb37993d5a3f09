import { OciError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { keys } from '../registry/keys.js';
import type { Json, LeaseView } from '../../ports/meta-index.js';
import { POLL_MAX_MS, POLL_MIN_MS, type FillDeps, type FillState } from './fill-state.js';

/**
 * One process's view of a fill led elsewhere: one readLease at a time per digest, shared by
 * every follower in the process, polled with backoff while followers wait.
 */
export class RemoteWatch {
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
