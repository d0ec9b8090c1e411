/**
 * Orders strings by code point (as UTF-8 bytes compare, PostgreSQL's "C" collation), where
 * `<` compares UTF-16 code units: a surrogate (U+D800–DFFF, half of a character above
 * U+FFFF) must sort after U+E000–FFFF. Unlike `localeCompare`, the order is the same on
 * every host, which signed answers and files depend on.
 */
export function byCodePoint(a: string, b: string): number {
  if (a === b) return 0;
  for (let i = 0; i < a.length && i < b.length; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800 && y >= 0xd800) {
      x += x < 0xe000 ? 0x2000 : -0x800;
      y += y < 0xe000 ? 0x2000 : -0x800;
    }
    return x - y;
  }
  return a.length - b.length;
}
