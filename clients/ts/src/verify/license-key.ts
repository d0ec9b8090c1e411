/** Vinzy-format license keys (docs/formats.md, "License keys"), case-insensitive. */
const VINZY_KEY = /^[A-Z0-9]{3}(-[A-Z2-7]{5}){7}$/;

/**
 * The key as licensd stores it: surrounding white space stripped, a Vinzy key upper-cased,
 * any other (custom) key unchanged.
 */
export function normalizeLicenseKey(key: string): string {
  const trimmed = key.trim();
  const upper = trimmed.toUpperCase();
  return VINZY_KEY.test(upper) ? upper : trimmed;
}
