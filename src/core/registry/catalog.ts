import type { Json } from '../../ports/meta-index.js';
import type { Ctx } from './context.js';
import { keys } from './keys.js';
import { readPage, type PageRequest } from './pages.js';

/** The repository list (GET /v2/_catalog), sorted, paged like tags. */
export class Catalog {
  constructor(private readonly ctx: Ctx) {}

  async list(request: PageRequest): Promise<{ repositories: string[]; next?: string }> {
    const page = await readPage<Json>(this.ctx.index, keys.reposPartition, request);
    return { repositories: page.entries.map((e) => e.sk), next: page.next };
  }
}
