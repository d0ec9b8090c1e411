import { useEffect, useState } from "preact/hooks";

/**
 * Hash routes (`#/licenses/lic_…`): the server serves one index.html, and a reload or a
 * shared link opens the same page. Written by hand: a dozen lines, no router needed.
 */
export function useRoute(): string[] {
  const read = () =>
    location.hash
      .replace(/^#\/?/, "")
      .split("/")
      .filter((p) => p !== "")
      .map(decodeURIComponent);
  const [parts, setParts] = useState(read);
  useEffect(() => {
    const on = () => setParts(read());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return parts;
}

export const href = (...parts: string[]) => `#/${parts.map(encodeURIComponent).join("/")}`;
export const go = (...parts: string[]) => {
  location.hash = href(...parts);
};
