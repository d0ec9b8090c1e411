import { invalidArgument } from "./errors.js";

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 1000;

export interface Page {
  size: number;
  /** Continue after this id (ids sort by creation); undefined for the first page. */
  after: string | undefined;
}

/**
 * Opaque page tokens: base64url JSON of the last id seen and a fingerprint of the
 * list's filters, so a token is refused when replayed against other filters.
 */
export function readPage(pageSize: number, pageToken: string, filters: unknown = {}): Page {
  const size = pageSize === 0 ? DEFAULT_PAGE_SIZE : Math.min(pageSize, MAX_PAGE_SIZE);
  if (pageToken === "") return { size, after: undefined };
  let parsed: { a?: unknown; f?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(pageToken, "base64url").toString("utf8")) as { a?: unknown; f?: unknown };
  } catch {
    throw invalidArgument("page_token", "not a token this list returned", "INVALID_PAGE_TOKEN");
  }
  if (typeof parsed?.a !== "string" || parsed.f !== JSON.stringify(filters)) {
    throw invalidArgument("page_token", "not a token this list returned (or the filters changed)", "INVALID_PAGE_TOKEN");
  }
  return { size, after: parsed.a };
}

/** Given up to size+1 rows, the page to return and the token for the next one. */
export function pageOf<T extends { id: string }>(rows: T[], page: Page, filters: unknown = {}): { items: T[]; nextPageToken: string } {
  return pageBy(rows, page, filters, (row) => row.id);
}

/** pageOf for rows ordered by another key than their id (e.g. an audit log's seq). */
export function pageBy<T>(rows: T[], page: Page, filters: unknown, cursorOf: (row: T) => string): { items: T[]; nextPageToken: string } {
  if (rows.length <= page.size) return { items: rows, nextPageToken: "" };
  const items = rows.slice(0, page.size);
  const token = Buffer.from(JSON.stringify({ a: cursorOf(items[items.length - 1]), f: JSON.stringify(filters) })).toString("base64url");
  return { items, nextPageToken: token };
}
