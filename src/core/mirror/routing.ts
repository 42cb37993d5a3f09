import { OciError } from '../errors.js';
import { canonicalNamespace, type MirrorConfig, type UpstreamConfig } from './config.js';

/**
 * Which registry a request's repository name belongs to: hosted here, or mirrored from one
 * configured upstream. Decided per request, in this order (first match wins):
 *
 *   1. `?ns=<host>` (containerd's mirror query): the upstream whose namespace is that host;
 *      any other host is refused. `ns` is a closed-world key: only configured upstreams are
 *      ever dialled, whatever a client sends.
 *   2. the first path component is an upstream's alias (`hub/library/nginx`) or its namespace
 *      (`docker.io/library/nginx`): that upstream, with the rest as the upstream's repository.
 *   3. a hosted prefix (`team/`): hosted.
 *   4. the default upstream, if one is configured (Docker's registry-mirrors sends bare names).
 *   5. hosted.
 *
 * Mirrored repositories are kept under their qualified name, `<namespace>/<repository>`
 * (docker.io/library/nginx), which is also what `_catalog` lists and what rules match.
 * Docker Hub's one-component names are official images: `nginx` is `library/nginx`.
 */
export type Target =
  | { kind: 'hosted'; name: string }
  | {
      kind: 'mirror';
      upstream: UpstreamConfig;
      /** The upstream's own repository name (normalised). */
      remote: string;
      /** Where Outpost keeps it: `<namespace>/<remote>`. */
      name: string;
      /**
       * Called before this request makes the mirror ask the upstream for what it does not hold
       * (a blob fill started or joined, a blob HEAD, a manifest, a tag list or referrers not
       * cached); throws to refuse. The HTTP layer sets it for anonymous callers, whose upstream
       * requests are limited per client address.
       */
      admit?: () => void;
    };

export function route(config: MirrorConfig, name: string, ns: string | undefined): Target {
  if (config.upstreams.length === 0) return { kind: 'hosted', name };
  if (ns !== undefined && ns !== '') {
    const namespace = canonicalNamespace(ns);
    const upstream = config.upstreams.find((u) => u.namespace === namespace);
    if (!upstream) {
      throw new OciError('NAME_UNKNOWN', `namespace "${ns.slice(0, 100)}" is not mirrored by this registry`, { ns: ns.slice(0, 100) });
    }
    return mirrored(upstream, name);
  }
  const slash = name.indexOf('/');
  if (slash > 0) {
    const first = name.slice(0, slash);
    const upstream = config.upstreams.find((u) => u.name === first || u.namespace === canonicalNamespace(first));
    if (upstream) return mirrored(upstream, name.slice(slash + 1));
  }
  if (config.hosted.some((prefix) => name.startsWith(prefix) || `${name}/` === prefix)) return { kind: 'hosted', name };
  const fallback = config.upstreams.find((u) => u.default);
  if (fallback) return mirrored(fallback, name);
  return { kind: 'hosted', name };
}

function mirrored(upstream: UpstreamConfig, repository: string): Target {
  const remote = upstream.namespace === 'docker.io' && !repository.includes('/') ? `library/${repository}` : repository;
  const { content } = upstream;
  const allowed = (content.allow.length === 0 || content.allow.some((g) => g.test(remote))) && !content.deny.some((g) => g.test(remote));
  if (!allowed) {
    throw new OciError('DENIED', `repository "${remote}" is not mirrored from upstream "${upstream.name}" (its content rules)`, {
      upstream: upstream.name,
    });
  }
  return { kind: 'mirror', upstream, remote, name: `${upstream.namespace}/${remote}` };
}
