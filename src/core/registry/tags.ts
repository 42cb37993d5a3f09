import type { Json } from '../../ports/meta-index.js';
import { OciError } from '../errors.js';
import type { Ctx } from './context.js';
import { keys } from './keys.js';
import { allItems, readPage, type PageRequest } from './pages.js';

/** A hosted tag: the manifest it points at, and when it was last pushed (hosted retention). Absent on tags from before. */
export interface TagItem {
  digest: string;
  at?: number;
}

/** Tags of a repository (spec.md#listing-tags): tag -> manifest digest, sorted lexically. */
export class Tags {
  constructor(private readonly ctx: Ctx) {}

  async resolve(name: string, tag: string): Promise<string | undefined> {
    return (await this.ctx.index.get<{ digest: string }>(keys.tag(name, tag)))?.value.digest;
  }

  async set(name: string, tag: string, digest: string): Promise<void> {
    await this.ctx.index.put(keys.tag(name, tag), { digest, at: this.ctx.clock.now() });
  }

  /** Sets the tag only if it is absent (an immutable tag's first push); false if it exists. */
  async create(name: string, tag: string, digest: string): Promise<boolean> {
    return this.ctx.index.putIfAbsent(keys.tag(name, tag), { digest, at: this.ctx.clock.now() });
  }

  async delete(name: string, tag: string): Promise<boolean> {
    return this.ctx.index.delete(keys.tag(name, tag));
  }

  async list(name: string, request: PageRequest): Promise<{ tags: string[]; next?: string }> {
    if (!(await this.ctx.index.get(keys.repo(name)))) throw new OciError('NAME_UNKNOWN', undefined, { name });
    const page = await readPage<Json>(this.ctx.index, keys.tagPartition(name), request);
    return { tags: page.entries.map((e) => e.sk), next: page.next };
  }

  /** The tags that point at `digest`. */
  async pointingAt(name: string, digest: string): Promise<string[]> {
    const out: string[] = [];
    for await (const { sk, item } of allItems<{ digest: string }>(this.ctx.index, keys.tagPartition(name))) if (item.value.digest === digest) out.push(sk);
    return out;
  }

  /** Removes every tag that points at `digest` (a manifest being deleted), but those `keep` names. */
  async deletePointingAt(name: string, digest: string, keep: (tag: string) => boolean = () => false): Promise<void> {
    for await (const { sk, item } of allItems<{ digest: string }>(this.ctx.index, keys.tagPartition(name))) {
      // Only if still pointing there: a concurrent re-tag wins.
      if (item.value.digest === digest && !keep(sk)) await this.ctx.index.delete(keys.tag(name, sk), item.version);
    }
  }
}
