// The built-in client's session over the remote tunnel (src/session.ts), against a fake tunnel:
// the test reads what the client writes and answers with backend bytes.
import { serialize } from "pg-protocol";
import { describe, expect, it } from "vitest";
import { decodeResult, encodeQuery } from "../../src/codec.ts";
import { PoolError } from "../../src/errors.ts";
import { SessionClosed, TunnelSession } from "../../src/session.ts";
import type { Tunnel } from "../../src/socket.ts";
import { concat } from "./wire-helpers.ts";

const encoder = new TextEncoder();

function msg(type: string, body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(5 + body.length);
  out[0] = type.charCodeAt(0);
  new DataView(out.buffer).setInt32(1, 4 + body.length);
  out.set(body, 5);
  return out;
}
const cstr = (s: string) => encoder.encode(`${s}\0`);
const join = (...parts: Uint8Array[]) => concat(parts);
const ready = (status = "I") => msg("Z", encoder.encode(status));
const keyData = (pid: number) => {
  const body = new Uint8Array(8);
  new DataView(body.buffer).setInt32(0, pid);
  return msg("K", body);
};
const startupAnswer = (pid = 77) => join(msg("R", new Uint8Array(4)), keyData(pid), ready());
const oneRow = (value: string) => {
  const rd = join(new Uint8Array([0, 1]), cstr("n"), new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]));
  const row = join(new Uint8Array([0, 1, 0, 0, 0, value.length]), encoder.encode(value));
  return join(msg("T", rd), msg("D", row), msg("C", cstr("SELECT 1")));
};
const fatal = (code: string, text: string) => msg("E", join(cstr("SFATAL"), cstr("VFATAL"), cstr("C08006"), cstr(`M${code}: ${text}`), new Uint8Array([0])));

/** A tunnel whose reads the test feeds and whose writes it can see, message by message. */
function fakeTunnel() {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const writes: Uint8Array[] = [];
  let wrote: (() => void) | undefined;
  const tunnel: Tunnel = {
    readable: new ReadableStream({ start: (c) => void (controller = c) }),
    writable: new WritableStream({
      write(bytes) {
        writes.push(bytes);
        wrote?.();
      },
    }),
  };
  return {
    tunnel,
    writes,
    answer: (bytes: Uint8Array) => controller.enqueue(bytes),
    end: () => controller.close(),
    /** Resolves once the client has written `n` chunks in all. */
    written: (n: number) => new Promise<void>((resolve) => {
      const check = () => (writes.length >= n ? resolve() : void (wrote = check));
      check();
    }),
    /** Message types of one written chunk; the startup (no type byte) shows as "startup". */
    types: (chunk: Uint8Array) => {
      const out: string[] = [];
      let at = 0;
      if (new DataView(chunk.buffer, chunk.byteOffset).getInt32(4) === 196608) {
        out.push("startup");
        at = new DataView(chunk.buffer, chunk.byteOffset).getInt32(0);
      }
      for (; at < chunk.length; at += 1 + new DataView(chunk.buffer, chunk.byteOffset + at + 1).getInt32(0)) out.push(String.fromCharCode(chunk[at]!));
      return out.join(" ");
    },
  };
}

describe("the built-in client's tunnel session", () => {
  it("sends the startup once, with the first batch, and reads each batch's answer up to its ReadyForQuery", async () => {
    const fake = fakeTunnel();
    const session = new TunnelSession(Promise.resolve(fake.tunnel), { tenant: "acme", oneShot: true });
    const first = session.run(encodeQuery("select 1"));
    await fake.written(1);
    expect(fake.types(fake.writes[0]!)).toBe("startup Q");
    // Split across reads, even inside a message.
    const answer = join(startupAnswer(77), oneRow("1"), ready());
    fake.answer(answer.subarray(0, 7));
    fake.answer(answer.subarray(7));
    expect([...decodeResult(await first, "acme")]).toEqual([{ n: "1" }]);
    expect(session.key).toBe(77);
    const second = session.run(encodeQuery("select 2"));
    await fake.written(2);
    expect(fake.types(fake.writes[1]!)).toBe("Q");
    fake.answer(join(oneRow("2"), ready()));
    expect([...decodeResult(await second, "acme")]).toEqual([{ n: "2" }]);
  });

  it("batches queue in order: the next is written only after the previous one's answer", async () => {
    const fake = fakeTunnel();
    const session = new TunnelSession(Promise.resolve(fake.tunnel), { tenant: "acme", oneShot: true });
    const a = session.run(encodeQuery("select 'a'"));
    const b = session.run(encodeQuery("select 'b'"));
    expect(session.pending).toBe(2);
    await fake.written(1);
    await new Promise((r) => setTimeout(r, 10));
    expect(fake.writes).toHaveLength(1);
    fake.answer(join(startupAnswer(), oneRow("a"), ready()));
    expect([...decodeResult(await a, "acme")]).toEqual([{ n: "a" }]);
    await fake.written(2);
    fake.answer(join(oneRow("b"), ready()));
    expect([...decodeResult(await b, "acme")]).toEqual([{ n: "b" }]);
    expect(session.pending).toBe(0);
  });

  it("a parameterized batch goes as encodeQuery made it, Parse included (the coordinator answers a repeated Parse of the same text itself)", async () => {
    const fake = fakeTunnel();
    const session = new TunnelSession(Promise.resolve(fake.tunnel), { tenant: "acme", oneShot: true });
    const first = session.run(encodeQuery("select $1::int as n", [1]));
    await fake.written(1);
    expect(fake.types(fake.writes[0]!)).toBe("startup P B D E S");
    fake.answer(join(startupAnswer(), msg("1"), msg("2"), oneRow("1"), ready()));
    await first;
    const second = session.run(encodeQuery("select $1::int as n", [2]));
    await fake.written(2);
    expect(fake.types(fake.writes[1]!)).toBe("P B D E S");
    fake.answer(join(msg("1"), msg("2"), oneRow("2"), ready()));
    expect([...decodeResult(await second, "acme")]).toEqual([{ n: "2" }]);
  });

  it("a one-shot that leaves a transaction open closes its session (the coordinator rolls back); a batch queued behind it is not sent", async () => {
    const fake = fakeTunnel();
    const session = new TunnelSession(Promise.resolve(fake.tunnel), { tenant: "acme", oneShot: true });
    const begin = session.run(encodeQuery("begin"));
    const next = session.run(encodeQuery("select 1")).catch((e: unknown) => e);
    await fake.written(1);
    fake.answer(join(startupAnswer(), msg("C", cstr("BEGIN")), ready("T")));
    await begin;
    expect(session.closed).toBe(true);
    const error = await next;
    expect(error).toBeInstanceOf(SessionClosed);
    expect(error).toMatchObject({ code: "LEASE_LOST" });
    expect(fake.writes).toHaveLength(1);
  });

  it("a lease's session keeps its transaction open", async () => {
    const fake = fakeTunnel();
    const session = new TunnelSession(Promise.resolve(fake.tunnel), { tenant: "acme", oneShot: false });
    const begin = session.run(encodeQuery("begin"));
    await fake.written(1);
    fake.answer(join(startupAnswer(), msg("C", cstr("BEGIN")), ready("T")));
    await begin;
    expect(session.closed).toBe(false);
    expect(session.status).toBe("T");
  });

  it("the socket dying mid-batch is LEASE_LOST; a FATAL error the coordinator sent first is the answer, for later batches too", async () => {
    const lost = fakeTunnel();
    const a = new TunnelSession(Promise.resolve(lost.tunnel), { tenant: "acme", oneShot: false });
    const pending = a.run(encodeQuery("select pg_sleep(10)")).catch((e: unknown) => e);
    await lost.written(1);
    lost.answer(startupAnswer());
    lost.end();
    const error = await pending;
    expect(error).toBeInstanceOf(PoolError);
    expect(error).toMatchObject({ code: "LEASE_LOST", retryable: true, tenant: "acme" });
    expect(a.closed).toBe(true);

    // A one-shot's batch was sent when the socket died: it may have run, so the error does not invite a blind retry.
    const sent = fakeTunnel();
    const oneShot = new TunnelSession(Promise.resolve(sent.tunnel), { tenant: "acme", oneShot: true });
    const inFlight = oneShot.run(encodeQuery("insert into t values (1)")).catch((e: unknown) => e);
    await sent.written(1);
    sent.end();
    expect(await inFlight).toMatchObject({ code: "LEASE_LOST", retryable: false, message: expect.stringContaining("the query may have run") });

    const expired = fakeTunnel();
    const b = new TunnelSession(Promise.resolve(expired.tunnel), { tenant: "acme", oneShot: false });
    const run = b.run(encodeQuery("select 1"));
    await expired.written(1);
    expired.answer(join(startupAnswer(), fatal("LEASE_EXPIRED", "reclaimed")));
    expired.end();
    const answer = await run;
    expect(() => decodeResult(answer, "acme")).toThrow(expect.objectContaining({ code: "LEASE_EXPIRED" }));
    const again = await b.run(encodeQuery("select 1"));
    expect(() => decodeResult(again, "acme")).toThrow(expect.objectContaining({ code: "LEASE_EXPIRED" }));
  });

  it("one-shots that were never sent throw SessionClosed (the client sends them on a fresh session): after the coordinator closed an idle session, and behind a batch answered FATAL", async () => {
    // The coordinator closed the socket while the session was idle: the write fails, nothing is read.
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let open = true;
    const closedByCoordinator: Tunnel = {
      readable: new ReadableStream({ start: (c) => void (controller = c) }),
      writable: new WritableStream({
        write() {
          if (!open) throw new Error("socket closed");
        },
      }),
    };
    const idle = new TunnelSession(Promise.resolve(closedByCoordinator), { tenant: "acme", oneShot: true });
    const first = idle.run(encodeQuery("select 1"));
    controller.enqueue(join(startupAnswer(), oneRow("1"), ready()));
    await first;
    open = false;
    controller.close();
    const error = await idle.run(encodeQuery("insert into t values (1)")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SessionClosed);
    expect(idle.closed).toBe(true);

    // Two one-shots on one session; the first is answered FATAL and the session ends: the second was never written.
    const t = fakeTunnel();
    const s = new TunnelSession(Promise.resolve(t.tunnel), { tenant: "acme", oneShot: true });
    const a = s.run(encodeQuery("select 1"));
    const b = s.run(encodeQuery("insert into t values (2)")).catch((e: unknown) => e);
    await t.written(1);
    t.answer(join(startupAnswer(), fatal("LEASE_LOST", "the server closed the connection")));
    t.end();
    const answered = await a;
    expect(() => decodeResult(answered, "acme")).toThrow(expect.objectContaining({ code: "LEASE_LOST" }));
    expect(await b).toBeInstanceOf(SessionClosed);
    expect(t.writes).toHaveLength(1);

    // A FATAL answer to the startup itself (the database unreachable) is the answer of every batch queued on the session.
    const u = fakeTunnel();
    const never = new TunnelSession(Promise.resolve(u.tunnel), { tenant: "acme", oneShot: true });
    const c = never.run(encodeQuery("select 1"));
    const d = never.run(encodeQuery("select 2"));
    await u.written(1);
    u.answer(fatal("CONNECT_FAILED", "could not connect to db:5432: timed out after 400ms"));
    u.end();
    for (const answer of [await c, await d]) expect(() => decodeResult(answer, "acme")).toThrow(expect.objectContaining({ code: "CONNECT_FAILED" }));
    expect(u.writes).toHaveLength(1);
  });

  it("an idle one-shot session closes after idleMs; a batch in time keeps it open", async () => {
    const fake = fakeTunnel();
    const session = new TunnelSession(Promise.resolve(fake.tunnel), { tenant: "acme", oneShot: true, idleMs: 50 });
    const first = session.run(encodeQuery("select 1"));
    await fake.written(1);
    fake.answer(join(startupAnswer(), oneRow("1"), ready()));
    await first;
    await new Promise((r) => setTimeout(r, 30));
    const second = session.run(encodeQuery("select 2"));
    await fake.written(2);
    await new Promise((r) => setTimeout(r, 30));
    expect(session.closed).toBe(false);
    fake.answer(join(oneRow("2"), ready()));
    await second;
    await new Promise((r) => setTimeout(r, 80));
    expect(session.closed).toBe(true);
  });
});
