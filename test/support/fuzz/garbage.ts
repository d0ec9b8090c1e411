import fc from "fast-check";

/** Bytes that are not, or not quite, a protobuf message. `seed` is a valid encoding of a real request. */
export type Body = { what: string; bytes: Uint8Array };

/** A varint, as protobuf writes tags and lengths. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** 200,000 nested groups of an unknown field: decoders that recurse to skip them overflow the stack. */
export const deepGroups = (depth = 200_000) => {
  const start = varint((100 << 3) | 3);
  const end = varint((100 << 3) | 4);
  const out = new Uint8Array(depth * (start.length + end.length));
  for (let i = 0; i < depth; i++) out.set(start, i * start.length);
  for (let i = 0; i < depth; i++) out.set(end, depth * start.length + i * end.length);
  return out;
};

/** Field 1 (a string in most requests) holding bytes that are not UTF-8. */
const invalidUtf8 = Uint8Array.from([0x0a, 0x04, 0xff, 0xfe, 0xc3, 0x28]);

export function binaryBodyArb(seed: Uint8Array): fc.Arbitrary<Body> {
  return fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 64 }).map((bytes) => ({ what: "random bytes", bytes })),
    fc.constant({ what: "the issue's \\x08\\xff\\xff", bytes: Uint8Array.from([0x08, 0xff, 0xff]) }),
    fc
      .nat(Math.max(0, seed.length - 1))
      .map((n) => ({ what: `a real request cut to ${n} of ${seed.length} bytes`, bytes: seed.subarray(0, n) })),
    fc.tuple(fc.nat(Math.max(0, seed.length)), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([at, junk]) => ({
      what: `a real request with ${junk.length} bytes spliced in at ${at}`,
      bytes: Uint8Array.from([...seed.subarray(0, at), ...junk, ...seed.subarray(at)]),
    })),
    fc.constant({ what: "invalid UTF-8 in field 1", bytes: invalidUtf8 }),
    fc.constant({ what: "a length prefix past the end", bytes: Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x41]) }),
    fc.constant({
      what: "a 10-byte varint that overflows",
      bytes: Uint8Array.from([0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
    }),
    fc.constant({ what: "wire type 7", bytes: Uint8Array.from([0x0f, 0x00]) }),
    fc.constant({ what: "field number 0", bytes: Uint8Array.from([0x02, 0x00]) }),
    fc.constant({ what: "an end-group tag without a start", bytes: Uint8Array.from([0x0c]) }),
    fc.constant({ what: "200,000 nested groups", bytes: deepGroups() }),
  );
}

export type JsonBody = { what: string; text: string | Uint8Array };

export const jsonBodyArb: fc.Arbitrary<JsonBody> = fc.oneof(
  fc.constantFrom<JsonBody>(
    { what: "empty", text: "" },
    { what: "unterminated", text: '{"name": ' },
    { what: "array", text: "[]" },
    { what: "null", text: "null" },
    { what: "number", text: "1" },
    { what: "string", text: '"x"' },
    { what: "trailing garbage", text: "{} x" },
    { what: "BOM", text: "\uFEFF{}" },
    { what: "duplicate keys", text: '{"tenantId":"a","tenantId":"b"}' },
    { what: "lone surrogate escape", text: '{"tenantId":"\\ud800"}' },
    { what: "NUL escape", text: '{"tenantId":"\\u0000"}' },
    { what: "100,000 nested arrays", text: `${"[".repeat(100_000)}${"]".repeat(100_000)}` },
    { what: "100,000 nested objects in an unknown field", text: `${'{"zz":'.repeat(100_000)}1${"}".repeat(100_000)}` },
    { what: "invalid UTF-8", text: Uint8Array.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]) },
  ),
  fc.string({ maxLength: 40 }).map((text) => ({ what: "random text", text })),
  fc.jsonValue({ maxDepth: 3 }).map((v) => ({ what: "random JSON", text: JSON.stringify(v) })),
);

/** What can be wrong with a gRPC request's frames (the message inside is valid unless said). */
export type FrameCase =
  | "garbage message"
  | "length prefix past the end"
  | "length prefix short of the data"
  | "compressed flag without grpc-encoding"
  | "gzip flag with bytes that are not gzip"
  | "unknown flag bits"
  | "two messages to a unary method"
  | "no message at all"
  | "a 5 MiB message"
  | "200,000 nested groups"
  | "half a frame header"
  | "a valid message, then garbage";

export const FRAME_CASES: FrameCase[] = [
  "garbage message",
  "length prefix past the end",
  "length prefix short of the data",
  "compressed flag without grpc-encoding",
  "gzip flag with bytes that are not gzip",
  "unknown flag bits",
  "two messages to a unary method",
  "no message at all",
  "a 5 MiB message",
  "200,000 nested groups",
  "half a frame header",
  "a valid message, then garbage",
];

const frame = (payload: Uint8Array, flag = 0, declared = payload.length) => {
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(declared, 1);
  return Buffer.concat([head, payload]);
};

/** The chunks and extra headers of a gRPC request for `c`, built around a valid message `seed`. */
export function grpcFrames(
  c: FrameCase,
  seed: Uint8Array,
  junk: Uint8Array,
): { chunks: Buffer[]; headers: Record<string, string> } {
  switch (c) {
    case "garbage message":
      return { chunks: [frame(junk)], headers: {} };
    case "length prefix past the end":
      return { chunks: [frame(seed, 0, seed.length + 100)], headers: {} };
    case "length prefix short of the data":
      return { chunks: [frame(Buffer.concat([seed, junk]), 0, seed.length)], headers: {} };
    case "compressed flag without grpc-encoding":
      return { chunks: [frame(seed, 1)], headers: {} };
    case "gzip flag with bytes that are not gzip":
      return { chunks: [frame(junk, 1)], headers: { "grpc-encoding": "gzip" } };
    case "unknown flag bits":
      return { chunks: [frame(seed, 0x7e)], headers: {} };
    case "two messages to a unary method":
      return { chunks: [frame(seed), frame(seed)], headers: {} };
    case "no message at all":
      return { chunks: [], headers: {} };
    case "a 5 MiB message":
      return { chunks: [frame(new Uint8Array(5 * 1024 * 1024))], headers: {} };
    case "200,000 nested groups":
      return { chunks: [frame(deepGroups())], headers: {} };
    case "half a frame header":
      return { chunks: [Buffer.from([0, 0, 0])], headers: {} };
    case "a valid message, then garbage":
      return { chunks: [frame(seed), frame(junk)], headers: {} };
  }
}
