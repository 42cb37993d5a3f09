import { Blobs } from './blobs.js';
import { Catalog } from './catalog.js';
import { DEFAULT_OPTIONS, type Ctx, type RegistryDeps } from './context.js';
import { Manifests } from './manifests.js';
import { Referrers } from './referrers.js';
import { Tags } from './tags.js';
import { Uploads } from './uploads.js';

export type { RegistryDeps, RegistryOptions } from './context.js';

/** The registry engine: one object per resource, all over the same ports. */
export interface Registry {
  blobs: Blobs;
  uploads: Uploads;
  manifests: Manifests;
  tags: Tags;
  referrers: Referrers;
  catalog: Catalog;
}

export function createRegistry(deps: RegistryDeps): Registry {
  const ctx: Ctx = { ...deps, options: { ...DEFAULT_OPTIONS, ...deps.options } };
  const blobs = new Blobs(ctx);
  const tags = new Tags(ctx);
  return {
    blobs,
    uploads: new Uploads(ctx, blobs),
    manifests: new Manifests(ctx, blobs, tags),
    tags,
    referrers: new Referrers(ctx),
    catalog: new Catalog(ctx),
  };
}
