// A child process of bench/memory.ts that holds idle ConnectLease streams open: raw HTTP/2 with gRPC
// framing (a Connect client's per-call objects would cost this process more than the streams cost the
// server), STREAMS_PER_CONNECTION streams on each connection. It says { ready } once loaded; the parent
// sends the streams to open; it answers { opened } once every stream has its first lease, then holds them
// until told to close.
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  ConnectLeaseRequestSchema,
  ConnectLeaseResponseSchema,
} from "../gen/ts/licensd/activation/v1/activation_service_pb.js";

/** One HTTP/2 connection with 10,000 streams trips Node's per-session memory guard (ENHANCE_YOUR_CALM). */
const STREAMS_PER_CONNECTION = 250;
/** Opening at once more than this only queues for the server's database connections. */
const OPENING = 25;

export interface LeaseClientsOrder {
  url: string;
  agents: { key: string; fingerprint: string }[];
}

function grpcFrame(body: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  return frame;
}

/** Opens one stream and resolves when its first message (a lease) has arrived. */
function openStream(session: http2.ClientHttp2Session, agent: { key: string; fingerprint: string }) {
  return new Promise<http2.ClientHttp2Stream>((resolve, reject) => {
    const stream = session.request({
      ":method": "POST",
      ":path": "/licensd.activation.v1.ActivationService/ConnectLease",
      "content-type": "application/grpc",
      te: "trailers",
    });
    stream.write(grpcFrame(toBinary(ConnectLeaseRequestSchema, create(ConnectLeaseRequestSchema, agent))));
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 5 || buf.length < 5 + buf.readUInt32BE(1)) return;
      stream.off("data", onData);
      const first = fromBinary(ConnectLeaseResponseSchema, buf.subarray(5, 5 + buf.readUInt32BE(1)));
      if (first.event.case === "lease") resolve(stream);
      else reject(new Error(`first message was ${first.event.case}`));
    };
    stream.on("data", onData);
    stream.on("error", reject);
    stream.on("trailers", (t) => reject(new Error(`stream ended: ${t["grpc-status"]} ${t["grpc-message"]}`)));
  });
}

async function hold(order: LeaseClientsOrder) {
  const sessions: http2.ClientHttp2Session[] = [];
  for (let i = 0; i < order.agents.length; i += STREAMS_PER_CONNECTION) sessions.push(http2.connect(order.url));
  const streams: http2.ClientHttp2Stream[] = [];
  let cursor = 0;
  const opener = async () => {
    while (cursor < order.agents.length) {
      const n = cursor++;
      streams.push(await openStream(sessions[Math.floor(n / STREAMS_PER_CONNECTION)]!, order.agents[n]!));
    }
  };
  await Promise.all(Array.from({ length: OPENING }, opener));
  return () => {
    for (const s of sessions) s.destroy();
  };
}

process.send!({ ready: true });
process.once("message", (order: LeaseClientsOrder) => {
  hold(order).then(
    (close) => {
      process.send!({ opened: order.agents.length });
      process.once("message", () => {
        close();
        process.exit(0);
      });
    },
    (err: Error) => {
      process.send!({ error: err.message });
      process.exit(1);
    },
  );
});
