/*
 * UsageSpool: UsageUploader's on-disk queue of recorded usage events. `append` resolves only
 * after the events are written and fsync'd, so an acknowledged record survives a crash; the
 * uploader settles (removes) events once the server acknowledged or refused them.
 *
 * Format, in the spool directory (one process at a time holds it, through `lock`):
 *
 *   seg-<16-digit sequence>.jsonl   append-only segments, one event per line:
 *       <CRC-32 of the JSON text, 8 lowercase hex digits> <space> <JSON> <\n>
 *     the JSON: {"k": idempotency key, "m": metric, "q": quantity, "t": event time in ms since the epoch,
 *                "a": attributes, "g": agent id, "l": license id}; "a", "g", "l" only when set.
 *   cursor.json   {"segment": <sequence>, "settled": <n>}: the first n valid lines of that segment are settled.
 *       Replaced by rename and not fsync'd: losing it only means resending events the server then
 *       answers as duplicates (their idempotency keys are unchanged).
 *   lock          the holder's pid; a lock whose process is gone (or that names this process, as a restarted
 *                 container's PID 1 finds it) is taken over.
 *
 * Recovery reads every segment in order and skips a line whose checksum or JSON does not hold
 * (a torn last line from a crash mid-write; counted in `corrupt`). An opened spool never
 * appends to an existing segment: it starts a new one, so a torn tail stays isolated. A segment
 * is deleted once every event in it is settled and it is no longer written to.
 *
 * Written by hand: no maintained npm package offers a crash-safe, size-bounded, fsync'd
 * append-only queue without a native addon.
 */
import { randomUUID } from "node:crypto";
import { constants } from "node:fs";
import { mkdir, open, readFile, readdir, rename, rm, unlink, writeFile, type FileHandle } from "node:fs/promises";
import path from "node:path";
// zlib.crc32 arrived in Node 20.15 and 22.2: hence the package's engines field.
import { crc32 } from "node:zlib";

/** One recorded event as the spool keeps it. */
export interface SpooledEvent {
  /** Idempotency key: the same on every resend. */
  key: string;
  metric: string;
  quantity: number;
  /** Event time, ms since the epoch. */
  time: number;
  attributes?: Record<string, string>;
  agentId?: string;
  licenseId?: string;
}

/** An event handed out for sending; `settle` takes it back. */
export interface SpoolEntry {
  readonly event: SpooledEvent;
  /** Its line's size on disk. */
  readonly bytes: number;
  readonly segment: SpoolSegment;
  readonly index: number;
}

/** Thrown by `append` when the events would take the spool past `maxBytes`: nothing is written. */
export class SpoolFullError extends Error {
  readonly code = "SPOOL_FULL";
  constructor(
    readonly spoolBytes: number,
    readonly maxBytes: number,
  ) {
    super(`usage spool full: ${spoolBytes} of ${maxBytes} bytes in use; events are refused until the server acks more`);
    this.name = "SpoolFullError";
  }
}

/** Thrown by `UsageSpool.open` when another live process holds the directory. */
export class SpoolLockedError extends Error {
  readonly code = "SPOOL_LOCKED";
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(`usage spool ${dir} is held by process ${pid}`);
    this.name = "SpoolLockedError";
  }
}

export interface SpoolOptions {
  /** Upper bound of the segment files' total size; appends past it throw SpoolFullError. Default 64 MiB. */
  maxBytes?: number;
  /** A segment is closed and a new one started past this size. Default 1 MiB (at most a quarter of maxBytes). */
  segmentBytes?: number;
}

export interface SpoolCounts {
  /** Events on disk, not settled. */
  pending: number;
  /** Bytes of the segment files (plus appends being written). */
  bytes: number;
  /** Lines skipped on recovery: torn or corrupt. */
  corrupt: number;
}

export interface SpoolSegment {
  seq: number;
  file: string;
  bytes: number;
  /** Valid events in the file. */
  count: number;
  /** Ordinal (within this process) of its first event. */
  base: number;
  /** Its events, or undefined while they are only on disk (read again when sending reaches them). */
  events: SpooledEvent[] | undefined;
  /** The next event to hand out. */
  sendPos: number;
  settled: Uint8Array;
  settledCount: number;
  /** Settled events before the first unsettled one. */
  prefix: number;
  /** Still appended to. */
  handle: FileHandle | undefined;
}

interface Append {
  text: string;
  bytes: number;
  events: SpooledEvent[];
  resolve(): void;
  reject(err: unknown): void;
}

const SEGMENT = /^seg-(\d{16})\.jsonl$/;
const segmentName = (seq: number) => `seg-${String(seq).padStart(16, "0")}.jsonl`;
const MiB = 1024 * 1024;
const WRITE_BYTES = 256 * 1024;

/** One line of the format: checksum, space, JSON, newline (a string: one buffer is made per write, not per event). */
export function encodeLine(e: SpooledEvent): string {
  const json = JSON.stringify({
    k: e.key,
    m: e.metric,
    q: e.quantity,
    t: e.time,
    ...(e.attributes && Object.keys(e.attributes).length > 0 ? { a: e.attributes } : {}),
    ...(e.agentId ? { g: e.agentId } : {}),
    ...(e.licenseId ? { l: e.licenseId } : {}),
  });
  // zlib's crc32 takes a string as its UTF-8 bytes, the bytes written.
  return `${crc32(json).toString(16).padStart(8, "0")} ${json}\n`;
}

/** The valid events of a segment's bytes, in order; `corrupt` counts the lines skipped. */
export function decodeSegment(data: Buffer): { events: SpooledEvent[]; corrupt: number } {
  const events: SpooledEvent[] = [];
  let corrupt = 0;
  let start = 0;
  while (start < data.length) {
    const end = data.indexOf(0x0a, start);
    // No newline: the last write was torn.
    if (end < 0) {
      corrupt++;
      break;
    }
    const event = decodeLine(data.subarray(start, end));
    if (event) events.push(event);
    else corrupt++;
    start = end + 1;
  }
  return { events, corrupt };
}

function decodeLine(line: Buffer): SpooledEvent | undefined {
  if (line.length < 10 || line[8] !== 0x20) return undefined;
  const body = line.subarray(9);
  if (crc32(body).toString(16).padStart(8, "0") !== line.subarray(0, 8).toString("latin1")) return undefined;
  try {
    const j = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
    if (typeof j.k !== "string" || typeof j.m !== "string" || typeof j.q !== "number" || typeof j.t !== "number")
      return undefined;
    return {
      key: j.k,
      metric: j.m,
      quantity: j.q,
      time: j.t,
      ...(j.a ? { attributes: j.a as Record<string, string> } : {}),
      ...(typeof j.g === "string" ? { agentId: j.g } : {}),
      ...(typeof j.l === "string" ? { licenseId: j.l } : {}),
    };
  } catch {
    return undefined;
  }
}

/** Makes a file's creation or removal durable: fsync of its directory (not possible on Windows). */
async function syncDir(dir: string) {
  if (process.platform === "win32") return;
  const d = await open(dir, constants.O_RDONLY);
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

function alive(pid: number) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export class UsageSpool {
  readonly maxBytes: number;
  readonly segmentBytes: number;
  private readonly segments: SpoolSegment[] = [];
  private nextSeq = 1;
  private ordinals = 0;
  private bytes = 0;
  private queuedBytes = 0;
  private corrupt = 0;
  private readonly queue: Append[] = [];
  private writing: Promise<void> | undefined;
  private broken: unknown;
  private closed = false;
  private readonly waiters = new Set<() => void>();
  private cursorWrite: Promise<void> | undefined;
  private cursorDirty = false;

  private constructor(
    readonly dir: string,
    opts: SpoolOptions,
  ) {
    this.maxBytes = opts.maxBytes ?? 64 * MiB;
    this.segmentBytes = opts.segmentBytes ?? Math.max(4096, Math.min(MiB, Math.floor(this.maxBytes / 4)));
  }

  /** Opens (creating) the spool in `dir`, takes its lock and recovers what earlier processes left. */
  static async open(dir: string, opts: SpoolOptions = {}): Promise<UsageSpool> {
    await mkdir(dir, { recursive: true });
    const spool = new UsageSpool(dir, opts);
    await spool.lock();
    try {
      await spool.recover();
    } catch (err) {
      await rm(path.join(dir, "lock"), { force: true });
      throw err;
    }
    return spool;
  }

  private async lock() {
    const file = path.join(this.dir, "lock");
    for (let attempt = 0; ; attempt++) {
      try {
        await writeFile(file, String(process.pid), { flag: "wx" });
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 2) throw err;
      }
      const pid = Number(await readFile(file, "utf8").catch(() => ""));
      // Our own pid is an earlier run's (a container's PID 1 restarted): open a directory once per process.
      if (pid > 0 && pid !== process.pid && alive(pid)) throw new SpoolLockedError(this.dir, pid);
      // Left by a process that is gone: take it over (by rename, so two takers cannot both win).
      const stale = `${file}.${randomUUID()}`;
      await rename(file, stale).catch(() => undefined);
      await rm(stale, { force: true });
    }
  }

  private async recover() {
    const names = (await readdir(this.dir)).filter((n) => SEGMENT.test(n)).sort();
    const cursor = await readFile(path.join(this.dir, "cursor.json"), "utf8").then(
      (t) => JSON.parse(t) as { segment: number; settled: number },
      () => undefined,
    );
    for (const name of names) {
      const seq = Number(SEGMENT.exec(name)![1]);
      const file = path.join(this.dir, name);
      const data = await readFile(file);
      const { events, corrupt } = decodeSegment(data);
      this.corrupt += corrupt;
      this.nextSeq = Math.max(this.nextSeq, seq + 1);
      const skip = cursor?.segment === seq ? Math.min(cursor.settled, events.length) : 0;
      if (events.length - skip === 0) {
        await unlink(file);
        continue;
      }
      const segment = this.newSegment(seq, file, data.length, events.length);
      segment.settled.fill(1, 0, skip);
      segment.settledCount = segment.prefix = segment.sendPos = skip;
      // Only the first segment's events stay in memory; the others are read again when sending reaches them.
      segment.events = this.segments.length === 0 ? events : undefined;
      this.segments.push(segment);
      this.bytes += data.length;
    }
    if (names.length > 0) await syncDir(this.dir);
  }

  private newSegment(seq: number, file: string, bytes: number, count: number): SpoolSegment {
    const segment: SpoolSegment = {
      seq,
      file,
      bytes,
      count,
      base: this.ordinals,
      events: [],
      sendPos: 0,
      settled: new Uint8Array(Math.max(count, 64)),
      settledCount: 0,
      prefix: 0,
      handle: undefined,
    };
    this.ordinals += count;
    return segment;
  }

  /** Events, bytes and skipped lines, now. */
  counts(): SpoolCounts {
    let pending = 0;
    for (const s of this.segments) pending += s.count - s.settledCount;
    return { pending, bytes: this.bytes + this.queuedBytes, corrupt: this.corrupt };
  }

  /** How many events were appended (or recovered) in this process: the ordinal the next append gets. */
  appended(): number {
    return this.ordinals;
  }

  /** The ordinal of the first unsettled event (every event before it is settled). */
  settledBefore(): number {
    for (const s of this.segments) if (s.prefix < s.count) return s.base + s.prefix;
    return this.ordinals;
  }

  /**
   * Writes `events` to the current segment and fsyncs it; concurrent appends share one write and one fsync. Throws
   * SpoolFullError (writing nothing) when they would not fit in `maxBytes`.
   */
  append(events: SpooledEvent[]): Promise<void> {
    if (this.closed) return Promise.reject(new Error("usage spool closed"));
    if (this.broken) return Promise.reject(this.broken);
    const text = events.length === 1 ? encodeLine(events[0]!) : events.map(encodeLine).join("");
    const bytes = Buffer.byteLength(text);
    const used = this.bytes + this.queuedBytes;
    if (used + bytes > this.maxBytes) return Promise.reject(new SpoolFullError(used, this.maxBytes));
    this.queuedBytes += bytes;
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ text, bytes, events, resolve, reject });
      this.writing ??= this.writeQueued();
    });
  }

  private async writeQueued() {
    for (;;) {
      // Cleared in the same turn the queue is seen empty, so a later append starts a new writer.
      if (this.queue.length === 0) {
        this.writing = undefined;
        return;
      }
      // Up to WRITE_BYTES a write: a burst of records becomes sendable in steps, not only once all of it is on disk.
      let take = 0;
      for (let bytes = 0; take < this.queue.length && bytes < WRITE_BYTES; take++) bytes += this.queue[take]!.bytes;
      const jobs = this.queue.splice(0, take);
      const buf = Buffer.from(jobs.length === 1 ? jobs[0]!.text : jobs.map((j) => j.text).join(""));
      let segment: SpoolSegment | undefined;
      try {
        segment = await this.writableSegment();
        await this.writeAll(segment, buf);
      } catch (err) {
        this.queuedBytes -= buf.length;
        for (const j of jobs) j.reject(err);
        continue;
      }
      this.queuedBytes -= buf.length;
      this.bytes += buf.length;
      segment.bytes += buf.length;
      for (const j of jobs) {
        segment.events?.push(...j.events);
        segment.count += j.events.length;
        this.ordinals += j.events.length;
      }
      if (segment.settled.length < segment.count) {
        const grown = new Uint8Array(Math.max(segment.count, segment.settled.length * 2));
        grown.set(segment.settled);
        segment.settled = grown;
      }
      for (const j of jobs) j.resolve();
      this.wake();
    }
  }

  /** Writes and fsyncs; a failed write is cut off again so no partial line is left for later lines to follow. */
  private async writeAll(segment: SpoolSegment, buf: Buffer) {
    const fh = segment.handle!;
    try {
      let done = 0;
      while (done < buf.length)
        done += (await fh.write(buf, done, buf.length - done, segment.bytes + done)).bytesWritten;
      await fh.datasync();
    } catch (err) {
      try {
        await fh.truncate(segment.bytes);
        await fh.datasync();
      } catch {
        // The segment's tail is unknown: refuse everything from now on rather than mis-number events.
        this.broken = err;
      }
      await this.seal(segment);
      throw err;
    }
  }

  private async writableSegment(): Promise<SpoolSegment> {
    const last = this.segments.at(-1);
    if (last?.handle && last.bytes < this.segmentBytes) return last;
    if (last?.handle) await this.seal(last);
    for (;;) {
      const seq = this.nextSeq++;
      const file = path.join(this.dir, segmentName(seq));
      let handle: FileHandle;
      try {
        handle = await open(file, "wx");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") continue;
        throw err;
      }
      await syncDir(this.dir);
      const segment = this.newSegment(seq, file, 0, 0);
      segment.handle = handle;
      this.segments.push(segment);
      return segment;
    }
  }

  /** No more appends to `segment`; its events leave memory unless sending is inside it. */
  private async seal(segment: SpoolSegment) {
    const handle = segment.handle;
    segment.handle = undefined;
    await handle?.close().catch(() => undefined);
    if (segment.sendPos === 0 && segment.count > 0) segment.events = undefined;
    await this.dropSettled();
  }

  /** Up to `maxEvents` events (and about `maxBytes`) not handed out yet, oldest first; [] when there are none. */
  async take(maxEvents: number, maxBytes = 2 * MiB): Promise<SpoolEntry[]> {
    const out: SpoolEntry[] = [];
    let bytes = 0;
    for (const segment of this.segments) {
      if (out.length >= maxEvents || bytes >= maxBytes) break;
      if (segment.sendPos >= segment.count) continue;
      if (!segment.events) {
        try {
          segment.events = decodeSegment(await readFile(segment.file)).events.slice(0, segment.count);
        } catch (err) {
          // What was already taken is returned: entries handed out must reach the caller.
          if (out.length > 0) break;
          throw err;
        }
      }
      const events = segment.events;
      while (segment.sendPos < segment.count && out.length < maxEvents && bytes < maxBytes) {
        const index = segment.sendPos++;
        const event = events[index]!;
        const size = encodedSize(event);
        bytes += size;
        out.push({ event, bytes: size, segment, index });
      }
    }
    return out;
  }

  /** Whether events wait to be handed out. */
  hasUnsent(): boolean {
    return this.segments.some((s) => s.sendPos < s.count);
  }

  /** Calls `fn` once, on the next append (or close); the returned function cancels that. */
  watch(fn: () => void): () => void {
    this.waiters.add(fn);
    return () => this.waiters.delete(fn);
  }

  private wake() {
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w();
  }

  /** Marks entries done (acknowledged or refused by the server); deletes segments with nothing left. */
  async settle(entries: SpoolEntry[]): Promise<void> {
    for (const { segment, index } of entries) {
      if (segment.settled[index]) continue;
      segment.settled[index] = 1;
      segment.settledCount++;
      while (segment.prefix < segment.count && segment.settled[segment.prefix]) segment.prefix++;
    }
    await this.dropSettled();
    this.saveCursor();
  }

  private async dropSettled() {
    let dropped = false;
    while (this.segments.length > 0) {
      const s = this.segments[0]!;
      if (s.handle || s.settledCount < s.count) break;
      this.segments.shift();
      this.bytes -= s.bytes;
      await unlink(s.file).catch(() => undefined);
      dropped = true;
    }
    if (dropped) await syncDir(this.dir).catch(() => undefined);
  }

  /** Records the settled prefix of the oldest segment, in the background, coalescing calls. */
  private saveCursor() {
    this.cursorDirty = true;
    this.cursorWrite ??= (async () => {
      while (this.cursorDirty) {
        this.cursorDirty = false;
        const first = this.segments[0];
        const body = JSON.stringify(first ? { segment: first.seq, settled: first.prefix } : { segment: 0, settled: 0 });
        const tmp = path.join(this.dir, "cursor.json.tmp");
        await writeFile(tmp, body);
        await rename(tmp, path.join(this.dir, "cursor.json"));
      }
    })()
      .catch(() => undefined)
      .finally(() => (this.cursorWrite = undefined));
  }

  /** Waits for appends in progress, writes the cursor, removes a settled last segment and releases the lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.writing) await this.writing;
    const last = this.segments.at(-1);
    if (last?.handle) await this.seal(last);
    this.saveCursor();
    while (this.cursorWrite) await this.cursorWrite;
    this.wake();
    await rm(path.join(this.dir, "lock"), { force: true });
  }
}

function encodedSize(e: SpooledEvent): number {
  // Close enough for batch sizing (a batch's message must stay under the server's 4 MiB): field lengths plus framing.
  let size = 40 + e.key.length + e.metric.length + (e.agentId?.length ?? 0) + (e.licenseId?.length ?? 0);
  for (const k in e.attributes) size += 6 + k.length + e.attributes[k]!.length;
  return size;
}
