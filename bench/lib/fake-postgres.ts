// A fake Postgres behind the coordinator's `Connector` (bench/scale-sim.ts): enough of protocol 3.0
// for a server connection to log in (trust: AuthenticationOk at once), run the pool's own
// statements (reset, validation) and built-in one-shots. Not a test double for correctness: a
// socket whose far end costs nothing, so the heap holds what the coordinator keeps per connection.
import type { ByteSocket, Connector } from "../../worker/server/socket.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One backend message: type byte, length, body. */
function message(type: string, ...parts: (Uint8Array | string | number[])[]): Uint8Array {
  const bodies = parts.map((p) => (typeof p === "string" ? encoder.encode(`${p}\0`) : p instanceof Uint8Array ? p : Uint8Array.from(p)));
  const length = 4 + bodies.reduce((sum, b) => sum + b.length, 0);
  const out = new Uint8Array(1 + length);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, length);
  let at = 5;
  for (const b of bodies) out.set(b, (at += b.length) - b.length);
  return out;
}
const int16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
const int32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

const READY = message("Z", [0x49]);
const PARAMETERS = [
  ["server_version", "18.0"], ["server_encoding", "UTF8"], ["client_encoding", "UTF8"], ["DateStyle", "ISO, MDY"],
  ["integer_datetimes", "on"], ["standard_conforming_strings", "on"], ["TimeZone", "UTC"], ["IntervalStyle", "postgres"],
].map(([name, value]) => message("S", name!, value!));
/** One int4 column, named as Postgres names `select 1`'s. */
const ROW_DESCRIPTION = message("T", int16(1), "?column?", int32(0), int16(0), int32(23), int16(4), int32(-1), int16(0));

/** The answer to one statement of a simple Query: rows for `select`, a command tag for anything else. */
function statement(text: string): Uint8Array[] {
  const s = text.trim();
  if (!/^select\b/i.test(s)) return [message("C", s.split(/\s+/).slice(0, 2).join(" ").toUpperCase() || "EMPTY")];
  // `select name from pg_prepared_statements ...` (the reset's last step) has no rows here.
  const rows = /pg_prepared_statements/i.test(s) ? [] : [message("D", int16(1), int32(1), [0x31])];
  return [ROW_DESCRIPTION, ...rows, message("C", `SELECT ${rows.length}`)];
}

/** A connector whose sockets reach a fake server; `opened` counts the sockets it made. */
export function fakePostgres(): { connector: Connector; opened: () => number } {
  let opened = 0;
  let nextPid = 1;
  const connector: Connector = () => {
    opened++;
    const pid = nextPid++;
    let out!: ReadableStreamDefaultController<Uint8Array>;
    let closed = false;
    let buffer = new Uint8Array(0);
    let started = false;
    let resolveClosed!: () => void;
    const closedPromise = new Promise<void>((resolve) => (resolveClosed = resolve));
    const send = (...messages: Uint8Array[]) => {
      if (!closed) for (const m of messages) out.enqueue(m);
    };
    const hangUp = () => {
      if (closed) return;
      closed = true;
      try {
        out.close();
      } catch {
        // already closed by the reader's cancel
      }
      resolveClosed();
    };
    /** Frames and answers what the client wrote: the StartupMessage first, then typed messages. */
    const receive = (chunk: Uint8Array) => {
      const joined = new Uint8Array(buffer.length + chunk.length);
      joined.set(buffer);
      joined.set(chunk, buffer.length);
      buffer = joined;
      for (;;) {
        const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
        if (!started) {
          if (buffer.length < 4 || buffer.length < view.getInt32(0)) return;
          buffer = buffer.subarray(view.getInt32(0));
          started = true;
          send(message("R", int32(0)), ...PARAMETERS, message("K", int32(pid), int32(pid * 7919)), READY);
          continue;
        }
        if (buffer.length < 5 || buffer.length < 1 + view.getInt32(1)) return;
        const type = String.fromCharCode(buffer[0]!);
        const body = buffer.subarray(5, 1 + view.getInt32(1));
        buffer = buffer.subarray(1 + view.getInt32(1));
        switch (type) {
          case "Q": {
            const text = decoder.decode(body.subarray(0, body.length - 1));
            send(...text.split(";").filter((s) => s.trim()).flatMap(statement), READY);
            break;
          }
          case "P": send(message("1")); break;
          case "B": send(message("2")); break;
          case "D": send(ROW_DESCRIPTION); break;
          case "E": send(message("D", int16(1), int32(1), [0x31]), message("C", "SELECT 1")); break;
          case "C": send(message("3")); break;
          case "S": send(READY); break;
          case "X": hangUp(); return;
          default: break; // Flush and the rest: nothing to answer
        }
      }
    };
    const socket: ByteSocket = {
      readable: new ReadableStream<Uint8Array>({ start: (c) => void (out = c), cancel: () => hangUp() }),
      writable: new WritableStream<Uint8Array>({ write: (chunk) => receive(chunk), close: () => hangUp(), abort: () => hangUp() }),
      opened: Promise.resolve({}),
      closed: closedPromise,
      close: async () => hangUp(),
      startTls: () => {
        throw new Error("the fake server has no TLS (use sslmode=disable)");
      },
    };
    return socket;
  };
  return { connector, opened: () => opened };
}
