/**
 * Scopes of the Docker token spec (https://distribution.github.io/distribution/spec/auth/scope/):
 *
 *   scope       := resourcetype [ "(" resourceclass ")" ] ":" resourcename ":" action [ "," action ]*
 *   e.g.           repository:team/app:pull,push     registry:catalog:*
 *
 * and the `access` claim a token carries: [{type, name, actions}]. Only `repository` and
 * `registry:catalog` mean something here; other resource types are dropped, never granted.
 */
import { ACTIONS, type Action } from './config.js';

/** A request asks for at most this many scopes; more are a mistake or an attack (each costs a rule walk). */
export const MAX_SCOPES = 32;
/** A repository name is at most 255 characters (Distribution's limit), plus type and actions. */
export const MAX_SCOPE_CHARS = 512;

export type Scope =
  | { type: 'repository'; name: string; actions: Action[] }
  /** `registry:catalog:*`: listing repositories (each still filtered by pull). */
  | { type: 'registry'; name: 'catalog'; actions: ['*'] };

/** The `access` claim of a token, as the token spec writes it. */
export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

const NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;

/**
 * The scopes of a request, from `scope` parameters (GET: repeated; POST: space-separated).
 * Unknown resource types and actions are left out (a client may ask for more than we know);
 * a malformed scope is left out too. Returns undefined when there are too many to consider.
 */
export function parseScopes(values: string[]): Scope[] | undefined {
  const raw = values.flatMap((v) => v.split(' ')).filter((s) => s !== '');
  if (raw.length > MAX_SCOPES) return undefined;
  const out: Scope[] = [];
  for (const text of raw) {
    const scope = parseScope(text);
    if (scope) out.push(scope);
  }
  return out;
}

export function parseScope(text: string): Scope | undefined {
  if (text.length > MAX_SCOPE_CHARS) return undefined;
  const first = text.indexOf(':');
  const last = text.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  const type = text.slice(0, first).replace(/\([a-z0-9]+\)$/, '');
  const name = text.slice(first + 1, last);
  const actions = text.slice(last + 1).split(',');
  if (type === 'registry') return name === 'catalog' && actions.includes('*') ? { type, name, actions: ['*'] } : undefined;
  if (type !== 'repository' || !NAME.test(name) || name.length > 255) return undefined;
  // `*` asks for everything; what is granted is then filtered by the rules like any action.
  const known = actions.includes('*') ? [...ACTIONS] : ACTIONS.filter((a) => actions.includes(a));
  return known.length > 0 ? { type, name, actions: known } : undefined;
}

export function formatScope(scope: Scope): string {
  return `${scope.type}:${scope.name}:${scope.actions.join(',')}`;
}

/** Whether a token's access claim grants `action` on repository `name`. */
export function grants(access: readonly AccessEntry[], name: string, action: Action): boolean {
  return access.some((e) => e.type === 'repository' && e.name === name && e.actions.includes(action));
}

export function grantsCatalog(access: readonly AccessEntry[]): boolean {
  return access.some((e) => e.type === 'registry' && e.name === 'catalog' && e.actions.includes('*'));
}
