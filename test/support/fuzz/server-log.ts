import type { ChildProcess } from "node:child_process";

export interface LogLine {
  level: number;
  msg?: string;
  requestId?: string;
  procedure?: string;
  err?: { type?: string; message?: string; stack?: string };
  /** Output that was not a pino line (console.error from a library, a crash trace). */
  raw?: boolean;
  [k: string]: unknown;
}

/**
 * The spawned server's pino lines (JSON on stdout), as they arrive. `mark()` and
 * `errorsSince()` find error-level lines (pino level ≥ 50) written after a point;
 * `barrier(id)` waits for the line that names a request id, so everything the server
 * logged before answering that request has been read.
 */
export class ServerLog {
  readonly lines: LogLine[] = [];
  private partial = "";
  private waiters = new Map<string, () => void>();
  private seen = new Set<string>();

  constructor(child: ChildProcess) {
    const take = (d: Buffer) => this.take(d.toString("utf8"));
    child.stdout!.on("data", take);
    child.stderr!.on("data", take);
  }

  private take(text: string) {
    const parts = (this.partial + text).split("\n");
    this.partial = parts.pop()!;
    for (const raw of parts) {
      if (raw.trim() === "") continue;
      let line: LogLine;
      try {
        line = JSON.parse(raw) as LogLine;
      } catch {
        // Anything on stdout/stderr that is not a pino line (a crash trace) counts as an error.
        line = { level: 60, msg: raw, raw: true };
      }
      this.lines.push(line);
      if (line.requestId) {
        this.seen.add(line.requestId);
        this.waiters.get(line.requestId)?.();
      }
    }
  }

  mark(): number {
    return this.lines.length;
  }

  errorsSince(mark: number): LogLine[] {
    return this.lines.slice(mark).filter((l) => typeof l.level === "number" && l.level >= 50);
  }

  /** Resolves once a line naming `requestId` was read (or after `ms`, with false). */
  barrier(requestId: string, ms = 10_000): Promise<boolean> {
    if (this.seen.has(requestId)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(requestId);
        resolve(false);
      }, ms);
      this.waiters.set(requestId, () => {
        clearTimeout(timer);
        this.waiters.delete(requestId);
        resolve(true);
      });
    });
  }
}

/** One error line, short enough for a failure message. */
export function describeLine(l: LogLine): string {
  if (l.raw) return `raw output: ${String(l.msg).slice(0, 300)}`;
  const err = l.err ? ` ${l.err.type ?? ""}: ${l.err.message ?? ""}` : "";
  return `level ${l.level} ${l.procedure ?? ""} ${l.msg ?? ""}${err}`.slice(0, 400);
}
