/**
 * What the mirror needs to know about each upstream, as core consumes it. The entry point
 * parses the configuration document (upstreams: ..., see README "Configuration file") into
 * these; secrets are resolved there, never written in the document.
 */
export interface UpstreamConfig {
  /** Alias: `/v2/<name>/<repository>/...` reaches this upstream. */
  name: string;
  /** Base URL, e.g. https://registry-1.docker.io (no trailing slash). */
  url: string;
  /**
   * The registry host this upstream stands for, lower-case: what containerd sends as `?ns=`
   * and what qualifies mirrored repository names (docker.io/library/nginx). Docker Hub's
   * aliases (index.docker.io, registry-1.docker.io) are folded into docker.io.
   */
  namespace: string;
  /** Bare names (no alias, no ?ns=) that are not hosted go here (Docker's registry-mirrors). */
  default: boolean;
  /** A tag is served from cache this long, then revalidated with one HEAD. */
  tagTtlMs: number;
  /** How long past its TTL a cached tag is still served while the upstream fails. */
  maxStaleMs: number;
  /** Credentials for the upstream (Basic, or for the token endpoint), when configured. */
  credentials?: { username: string; password: string };
  /** Which repositories and tags may be fetched from this upstream. */
  content: ContentRules;
}

/**
 * Content rules (as zot's sync `content`): repositories are upstream-relative names matched by
 * glob (`*` within one path component, `**` across components). A repository is mirrored when
 * it matches an `allow` glob (or `allow` is empty) and no `deny` glob; a tag is fetched only
 * when it matches `tags` (an anchored regular expression), when set. Digests are not filtered
 * by `tags`: an allowed repository's content by digest is always reachable.
 */
export interface ContentRules {
  allow: RegExp[];
  deny: RegExp[];
  tags?: RegExp;
}

export interface MirrorConfig {
  upstreams: UpstreamConfig[];
  /**
   * Repository prefixes (`team/`, `internal/`) that are hosted here even when a default
   * upstream takes every other bare name. Without a default upstream every name that is not
   * routed to an upstream is hosted.
   */
  hosted: string[];
  /** Bytes of one stored part of a blob fill (followers on other instances read part by part). */
  fillPartBytes: number;
  /** A fill's lease lasts this long without a heartbeat; a successor takes over after it. */
  fillLeaseMs: number;
  /**
   * Bytes of fill buffers one instance may hold at once (each fill it leads holds two parts);
   * fills beyond it wait for room, or follow another instance that leads them.
   */
  fillMemoryBytes: number;
}

export const DEFAULT_TAG_TTL_MS = 5 * 60_000;
export const DEFAULT_MAX_STALE_MS = 24 * 3_600_000;
/**
 * 8 MiB on S3: small enough that a follower on another instance trails the leader by little,
 * large enough for S3's 5 MiB minimum part of a server-side compose and few index writes per
 * blob.
 */
export const DEFAULT_FILL_PART_BYTES = 8 * 1024 * 1024;
/**
 * 2 MiB on the embedded store, which has no smallest part: a fill holds at most two parts, and
 * a Node process's memory grew by several times the part size while it led fills (the upstream's
 * chunks stay in the window until their part is written, long enough to outlive the young
 * generation and wait for a full collection). In bench:mirror at N = 1 the busiest process grew
 * by 70 to 78 MiB with 2 MiB parts against 146 MiB with 8 MiB, in the same time; 1 MiB parts cost
 * a single fill a fifth more time in bench:fill (a part's file, rename and index write each).
 */
export const DEFAULT_LOCAL_FILL_PART_BYTES = 2 * 1024 * 1024;
/** 64 MiB: four fills of two 8 MiB parts each, well inside a Workers isolate's 128 MB. */
export const DEFAULT_FILL_MEMORY_BYTES = 64 * 1024 * 1024;
/**
 * Heartbeats run at a third of this, so a paused leader is replaced within it. It is also how
 * long the followers of a leader that died without a word (SIGKILL, a lost machine) wait
 * before one takes over: 10 s, against the 3.3 s between heartbeats that a leader must miss
 * twice over to lose it (a stopping Node process releases its leases at once: Fills.abandon).
 */
export const DEFAULT_FILL_LEASE_MS = 10_000;

/** Docker Hub's registry host names; docker.io is the canonical namespace. */
export const DOCKER_HUB_HOSTS = ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'registry.hub.docker.com'];

export function canonicalNamespace(host: string): string {
  const h = host.toLowerCase();
  return DOCKER_HUB_HOSTS.includes(h) ? 'docker.io' : h;
}
