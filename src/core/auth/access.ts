/**
 * Authorisation: what a caller may do to a repository, from the configured rules alone.
 * Rules only grant; a caller may do the union of what the rules naming it grant, on the
 * repositories their globs match, and nothing else (no rule: nothing, anonymous included). What
 * anonymous callers may do, every signed-in user may do too.
 *
 * Names are the repositories as Outpost keeps them: hosted names as pushed, mirrored ones
 * qualified by their upstream's namespace (`docker.io/library/nginx`), whatever alias, `?ns=`
 * or default upstream the request used to reach them (src/core/mirror/routing.ts), so that
 * one rule covers every path to the same content.
 */
import type { AccessRule, Action } from './config.js';

export type Caller = { kind: 'anonymous' } | { kind: 'user'; name: string };

export const ANONYMOUS: Caller = { kind: 'anonymous' };

export class AccessRules {
  constructor(private readonly rules: readonly AccessRule[]) {}

  /** The actions `caller` may take on repository `name`. */
  actions(caller: Caller, name: string): Set<Action> {
    const out = new Set<Action>();
    for (const rule of this.rules) {
      if (!names(rule, caller) || !rule.repositories.some((g) => g.test(name))) continue;
      for (const action of rule.actions) out.add(action);
    }
    return out;
  }

  may(caller: Caller, name: string, action: Action): boolean {
    return this.actions(caller, name).has(action);
  }

  /**
   * Whether any rule lets `caller` pull anything: a catalog that could list nothing for an
   * anonymous caller asks it to sign in instead.
   */
  mayPullSomething(caller: Caller): boolean {
    return this.rules.some((rule) => names(rule, caller) && rule.actions.includes('pull'));
  }
}

/** A rule for anonymous callers is for everyone: signing in never takes away what anybody may do. */
function names(rule: AccessRule, caller: Caller): boolean {
  if (rule.anonymous) return true;
  return caller.kind === 'user' && (rule.authenticated || rule.users.includes(caller.name));
}
