/**
 * Repository globs, one syntax for every rule in the configuration (mirror content, signature
 * policies, authorisation, retention): `*` matches within one path component (no `/`), `**`
 * matches any run of characters including `/`, every other character matches itself. A glob is
 * anchored at both ends. `team/*` matches `team/app` but not `team/a/b`; `team/**` matches both.
 */
export function compileGlob(glob: string): RegExp {
  let source = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i]!;
    if (ch === '*') {
      if (glob[i + 1] === '*') {
        source += '.*';
        i++;
      } else {
        source += '[^/]*';
      }
    } else {
      source += ch.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
    }
  }
  return new RegExp(`^${source}$`);
}

export function matchesAny(globs: RegExp[], name: string): boolean {
  return globs.some((g) => g.test(name));
}
