import { createHmac, timingSafeEqual } from "node:crypto";
import canonicalize from "canonicalize";
import { invalidArgument } from "./errors.js";

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 1000;

/** Which listing a page belongs to: a token is only good for the same list, tenant and filters. */
export interface PageScope {
  /** The list RPC, `package.Service/Method`. */
  list: string;
  /** The tenant listed, or `*` for lists across tenants. */
  tenantId: string;
  /** Everything else that selects or orders the rows (not the page size). */
  filters?: Record<string, unknown>;
}

export interface Page {
  size: number;
  /** Continue after this cursor (the server's own, e.g. the last id seen); undefined for the first page. */
  after: string | undefined;
  scope: PageScope;
}

const VERSION = 1;
const TAG_BYTES = 16;

/** The refusal for any token this server did not issue for this list, tenant and filters. */
export const invalidPageToken = () =>
  invalidArgument(
    "page_token",
    "not a token this list returned for these filters (send the next_page_token of the previous page, with the " +
      "same filters)",
    "INVALID_PAGE_TOKEN",
  );

/**
 * Page tokens, opaque to clients and tamper-evident:
 *
 *   base64url( 0x01 | cursor (UTF-8) | tag (16 bytes) )
 * tag = HMAC-SHA256(K, JSON ["licensd page token v1", list, tenant, RFC 8785 JSON of filters, cursor]) truncated to 16
 * bytes
 *   K   = HKDF-SHA256(data key, salt empty, info "licensd page token v1", 32 bytes), made by the first start and
 *         stored, so tokens outlive a data-key rotation
 *
 * The cursor is readable but not forgeable: a token altered, truncated, made up, or
 * issued for another list, tenant or filters is INVALID_ARGUMENT before any query runs.
 * Every instance on the database accepts every instance's tokens.
 */
export class PageTokens {
  private readonly key: Buffer;

  /** `key`: K, the data-key material's page-token key (derived once as below, then stored: data-key-material.ts). */
  constructor(key: Buffer) {
    this.key = key;
  }

  /**
   * The page a request asks for; throws INVALID_ARGUMENT (INVALID_PAGE_TOKEN, page_token) for a token not issued for
   * `scope`.
   */
  read(pageSize: number, pageToken: string, scope: PageScope): Page {
    const size = pageSize === 0 ? DEFAULT_PAGE_SIZE : Math.min(pageSize, MAX_PAGE_SIZE);
    if (pageToken === "") return { size, after: undefined, scope };
    const bytes = Buffer.from(pageToken, "base64url");
    // One spelling per token: padding, other alphabets or stray characters are not it.
    if (bytes.toString("base64url") !== pageToken || bytes.length <= 1 + TAG_BYTES || bytes[0] !== VERSION)
      throw invalidPageToken();
    const cursor = bytes.subarray(1, bytes.length - TAG_BYTES);
    const tag = bytes.subarray(bytes.length - TAG_BYTES);
    const after = cursor.toString("utf8");
    if (!timingSafeEqual(tag, this.tag(scope, after))) throw invalidPageToken();
    return { size, after, scope };
  }

  /** Given up to size+1 rows ordered by id, the page to return and the token for the next one. */
  pageOf<T extends { id: string }>(rows: T[], page: Page): { items: T[]; nextPageToken: string } {
    return this.pageBy(rows, page, (row) => row.id);
  }

  /** pageOf for rows ordered by another cursor than their id (an audit log's seq, a time and a key). */
  pageBy<T>(rows: T[], page: Page, cursorOf: (row: T) => string): { items: T[]; nextPageToken: string } {
    if (rows.length <= page.size) return { items: rows, nextPageToken: "" };
    const items = rows.slice(0, page.size);
    const cursor = cursorOf(items[items.length - 1]!);
    const token = Buffer.concat([
      Buffer.of(VERSION),
      Buffer.from(cursor, "utf8"),
      this.tag(page.scope, cursor),
    ]).toString("base64url");
    return { items, nextPageToken: token };
  }

  private tag(scope: PageScope, cursor: string): Buffer {
    const bound = JSON.stringify([
      "licensd page token v1",
      scope.list,
      scope.tenantId,
      canonicalize(scope.filters ?? {}) ?? "",
      cursor,
    ]);
    return createHmac("sha256", this.key).update(bound).digest().subarray(0, TAG_BYTES);
  }
}
