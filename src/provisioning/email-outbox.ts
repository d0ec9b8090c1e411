import type { Clock } from "../platform/clock.js";
import { type DataKeys, open, seal } from "../platform/crypto.js";
import { sql, timestampOf, type Database, type EntityManager } from "../platform/db.js";
import { newId } from "../platform/ids.js";
import type { Logger } from "../platform/logger.js";
import type { Page } from "../platform/pagination.js";
import { every } from "../platform/worker.js";
import type { Events } from "../events/events.js";

/** One message, as the outbox hands it to the transport. */
export interface MailMessage {
  from: string;
  to: { name: string; address: string };
  subject: string;
  text: string;
  html: string;
  attachments: { filename: string; content: string }[];
}

/** Sends one message; rejects with the SMTP server's answer when it is refused. */
export interface MailTransport {
  send(message: MailMessage): Promise<void>;
  close(): void;
}

export interface SmtpOptions {
  host: string;
  port: number;
  tls: "starttls" | "implicit" | "none";
  user: string | undefined;
  password: string | undefined;
}

/** An SMTP transport (nodemailer, loaded on the first message: a server that sends none does not carry it). */
export function smtpTransport(o: SmtpOptions): MailTransport {
  let made: Promise<import("nodemailer").Transporter> | undefined;
  const transporter = () => {
    made ??= import("nodemailer").then((nodemailer) =>
      nodemailer.createTransport({
        host: o.host,
        port: o.port,
        secure: o.tls === "implicit",
        // starttls is required, not opportunistic: a server that does not offer it is refused.
        requireTLS: o.tls === "starttls",
        ignoreTLS: o.tls === "none",
        auth: o.user !== undefined ? { user: o.user, pass: o.password } : undefined,
        connectionTimeout: 30_000,
        greetingTimeout: 30_000,
        socketTimeout: 60_000,
      }),
    );
    return made;
  };
  return {
    async send(m) {
      await (await transporter()).sendMail({
        from: m.from,
        to: m.to,
        subject: m.subject,
        text: m.text,
        html: m.html,
        attachments: m.attachments.map((a) => ({
          filename: a.filename,
          content: a.content,
          contentType: "text/plain",
        })),
      });
    },
    close() {
      void made?.then((t) => t.close());
    },
  };
}

export type EmailStatus = "pending" | "sent" | "failed";

/** What a license-key e-mail says besides the key (kept in the outbox row; nothing in it is secret). */
export interface KeyEmailVars {
  customer_name: string;
  customer_email: string;
  license_id: string;
  product_name: string;
  policy_name: string;
  /** ISO 8601, or "" for a license that does not expire. */
  expires_at: string;
}

export interface EmailTemplate {
  subject: string;
  text: string;
  html: string;
}

/** The template of a tenant that has not set one. Placeholders: `{{name}}` for each of KeyEmailVars and license_key. */
export const DEFAULT_TEMPLATE: EmailTemplate = {
  subject: "Your {{product_name}} license key",
  text:
    "Hello {{customer_name}},\n\nThank you for your purchase. " +
    "Your {{product_name}} ({{policy_name}}) license key:\n\n" +
    "    {{license_key}}\n\nKeep it safe: it activates the software.\n",
  html:
    "<p>Hello {{customer_name}},</p><p>Thank you for your purchase. Your {{product_name}} ({{policy_name}}) " +
    "license key:</p><p><code>{{license_key}}</code></p><p>Keep it safe: it activates the software.</p>",
};

export const PLACEHOLDERS = [
  "license_key",
  "customer_name",
  "customer_email",
  "license_id",
  "product_name",
  "policy_name",
  "expires_at",
] as const;

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

/**
 * Fills `{{name}}` placeholders (HTML-escaped in the HTML part). Written by hand: a fixed set of names with no logic
 * needs no template engine, and an unknown name is refused when the template is saved (unknownPlaceholder).
 */
export function render(template: EmailTemplate, values: Record<string, string>): EmailTemplate {
  const fill = (text: string, encode: (s: string) => string) =>
    text.replace(/\{\{\s*([a-z_]+)\s*\}\}/g, (_, name: string) => encode(values[name] ?? ""));
  return {
    // A header must stay one line, whatever a customer's name holds.
    subject: fill(template.subject, (s) => s).replace(/[\r\n]+/g, " "),
    text: fill(template.text, (s) => s),
    html: fill(template.html, escapeHtml),
  };
}

/** The first `{{name}}` in `text` that is not a placeholder, if any. */
export function unknownPlaceholder(text: string): string | undefined {
  for (const m of text.matchAll(/\{\{\s*([^}]*?)\s*\}\}/g))
    if (!(PLACEHOLDERS as readonly string[]).includes(m[1]!)) return m[1];
  return undefined;
}

export interface EmailDelivery {
  id: string;
  tenantId: string;
  licenseId: string;
  paymentEventId: string | null;
  toAddress: string;
  status: EmailStatus;
  attempts: number;
  nextAttemptAt: Date | null;
  lastError: string;
  sentAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

interface DeliveryRow {
  id: string;
  tenant_id: string;
  license_id: string;
  payment_event_id: string | null;
  to_address: string;
  status: EmailStatus;
  attempts: number;
  next_attempt_at: Date | string | null;
  last_error: string;
  sent_at: Date | string | null;
  created_at: Date | string;
  updated_at: Date | string;
}

const DELIVERY_COLUMNS = `id, tenant_id, license_id, payment_event_id, to_address, status, attempts, next_attempt_at,
  last_error, sent_at, created_at, updated_at`;

const deliveryOf = (r: DeliveryRow): EmailDelivery => ({
  id: r.id,
  tenantId: r.tenant_id,
  licenseId: r.license_id,
  paymentEventId: r.payment_event_id,
  toAddress: r.to_address,
  status: r.status,
  attempts: r.attempts,
  nextAttemptAt: timestampOf(r.next_attempt_at),
  lastError: r.last_error,
  sentAt: timestampOf(r.sent_at),
  createdAt: timestampOf(r.created_at),
  updatedAt: timestampOf(r.updated_at),
});

/** An outbox row as a worker claims it. */
interface ClaimedEmail {
  id: string;
  tenant_id: string;
  to_address: string;
  to_name: string;
  vars: KeyEmailVars;
  key_sealed: Buffer;
  attachment: { filename: string; content: string } | null;
  attempts: number;
  created_at: Date | string;
}

/** Retries: 1 minute, doubling to 6 hours, for 3 days; then the e-mail is FAILED. */
const RETRY_BASE_MS = 60_000;
const RETRY_CAP_MS = 6 * 3_600_000;
const GIVE_UP_MS = 3 * 86_400_000;
/** A claimed e-mail whose instance died before recording the attempt is tried again after this. */
const LEASE_MS = 5 * 60_000;
const BATCH = 10;

/**
 * License keys e-mailed from a PostgreSQL outbox: queued in the transaction that created the license (the key sealed
 * under the data key), sent after commit by a worker on every instance (claimed with SKIP LOCKED, so one instance sends
 * each), retried with backoff, the key erased once sent or given up.
 */
export function createEmailOutbox(deps: {
  db: Database;
  clock: Clock;
  events: Events;
  dataKey: DataKeys;
  logger: Logger;
  /** undefined: no SMTP server configured; e-mails are queued and wait. */
  transport: MailTransport | undefined;
  from: string;
  pollMs: number;
}) {
  const { db, clock, dataKey, logger, transport, from } = deps;

  async function template(em: EntityManager, tenantId: string): Promise<EmailTemplate> {
    const [row] = await sql<{ subject: string; text_body: string; html_body: string }>(
      em,
      `select subject, text_body, html_body from email_templates where tenant_id = $1`,
      [tenantId],
    );
    return row ? { subject: row.subject, text: row.text_body, html: row.html_body } : DEFAULT_TEMPLATE;
  }

  /** One claimed e-mail: sent and settled. */
  async function deliver(row: ClaimedEmail) {
    const key = open(dataKey, row.key_sealed, row.id).toString("utf8");
    const message = render(await template(db.em(), row.tenant_id), { ...row.vars, license_key: key });
    try {
      await transport!.send({
        from,
        to: { name: row.to_name, address: row.to_address },
        ...message,
        attachments: row.attachment ? [row.attachment] : [],
      });
    } catch (err) {
      const now = clock.now();
      const { attempts } = row;
      const giveUp = now.getTime() - timestampOf(row.created_at).getTime() >= GIVE_UP_MS;
      const delay = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** Math.max(0, attempts - 1));
      const error = (err instanceof Error ? err.message : String(err)).slice(0, 1000);
      await sql(
        db,
        `update email_outbox set status = $2, next_attempt_at = $3, last_error = $4, updated_at = $5,
           key_sealed = case when $2 = 'failed' then null else key_sealed end,
           attachment = case when $2 = 'failed' then null else attachment end
         where id = $1 and status = 'pending'`,
        [row.id, giveUp ? "failed" : "pending", giveUp ? null : new Date(now.getTime() + delay), error, now],
      );
      logger.warn({ emailId: row.id, attempts, giveUp, err: error }, "license key e-mail not sent");
      return;
    }
    const now = clock.now();
    await sql(
      db,
      `update email_outbox set status = 'sent', sent_at = $2, key_sealed = null, attachment = null,
         next_attempt_at = null, last_error = '', updated_at = $2 where id = $1`,
      [row.id, now],
    );
    logger.info({ emailId: row.id, tenantId: row.tenant_id }, "license key e-mailed");
  }

  /** Claims due e-mails (skipping those another instance holds) and sends them; returns how many it tried. */
  async function tick(): Promise<number> {
    if (!transport) return 0;
    const now = clock.now();
    const claimed = await sql<ClaimedEmail>(
      db,
      `update email_outbox o set attempts = o.attempts + 1, next_attempt_at = $2, updated_at = $1
        where o.id in (select id from email_outbox where status = 'pending' and next_attempt_at <= $1
                        order by next_attempt_at limit $3 for update skip locked)
        returning o.id, o.tenant_id, o.to_address, o.to_name, o.vars, o.key_sealed, o.attachment,
          o.attempts, o.created_at`,
      [now, new Date(now.getTime() + LEASE_MS), BATCH],
    );
    for (const row of claimed) await deliver(row);
    return claimed.length;
  }

  let loop: ReturnType<typeof every> | undefined;
  let draining: Promise<unknown> = Promise.resolve();
  /** Sends what is due now (a purchase's e-mail right after its commit), one pass at a time. */
  const wake = () => {
    draining = draining.then(() => tick()).catch((err: unknown) => logger.error({ err }, "e-mail outbox failed"));
  };

  return {
    tick,

    /** Queues a license-key e-mail in `em`'s transaction; it is sent once that commits. */
    async queue(
      em: EntityManager,
      input: {
        tenantId: string;
        licenseId: string;
        paymentEventId: string;
        name: string;
        key: string;
        /** A file to attach (a license file: signed claims, nothing secret). */
        attachment: { filename: string; content: string } | undefined;
        vars: KeyEmailVars;
      },
    ) {
      const id = newId("eml");
      const now = clock.now();
      await sql(
        em,
        `insert into email_outbox (id, tenant_id, license_id, payment_event_id, to_address, to_name, vars, key_sealed,
           attachment, status, attempts, next_attempt_at, last_error, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $10, 'pending', 0, $9, '', $9, $9)`,
        [
          id,
          input.tenantId,
          input.licenseId,
          input.paymentEventId,
          input.vars.customer_email,
          input.name,
          JSON.stringify(input.vars),
          seal(dataKey, Buffer.from(input.key, "utf8"), id),
          now,
          input.attachment ? JSON.stringify(input.attachment) : null,
        ],
      );
      db.afterCommit(em, wake);
      return id;
    },

    async list(
      em: EntityManager,
      tenantId: string,
      page: Page,
      f: { licenseId: string; status: EmailStatus | undefined },
    ): Promise<EmailDelivery[]> {
      const rows = await sql<DeliveryRow>(
        em,
        `select ${DELIVERY_COLUMNS} from email_outbox
          where tenant_id = $1 and ($2::text is null or id < $2) and ($3 = '' or license_id = $3)
            and ($4::text is null or status = $4)
          order by id desc limit $5`,
        [tenantId, page.after ?? null, f.licenseId, f.status ?? null, page.size + 1],
      );
      return rows.map(deliveryOf);
    },

    template,

    async setTemplate(em: EntityManager, tenantId: string, actor: string, t: EmailTemplate) {
      await sql(
        em,
        `insert into email_templates (tenant_id, subject, text_body, html_body, updated_at) values ($1, $2, $3, $4, $5)
         on conflict (tenant_id) do update set subject = $2, text_body = $3, html_body = $4, updated_at = $5`,
        [tenantId, t.subject, t.text, t.html, clock.now()],
      );
      await deps.events.emit(em, {
        tenantId,
        type: "email_template.updated",
        subject: tenantId,
        actor,
        payload: { subject: t.subject },
      });
    },

    start() {
      if (!transport) {
        logger.warn("LICENSD_SMTP_HOST is not set: license-key e-mails are queued, not sent");
        return;
      }
      loop = every(deps.pollMs, tick, { name: "e-mail outbox", logger });
    },

    async stop() {
      await loop?.stop();
      await draining;
      transport?.close();
    },
  };
}

export type EmailOutbox = ReturnType<typeof createEmailOutbox>;
