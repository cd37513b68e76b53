// The Durable Object's side of the WebSocket tunnel (worker/connect.ts) with a fake socket: what
// reaches the session, what the client gets, and when either side ends the other.
import { describe, expect, it } from "vitest";
import { PoolError } from "../../src/errors.ts";
import { bridge, MAX_INBOUND_QUEUED_BYTES, OUTBOUND_HIGH_WATER_BYTES, type TunnelSocket } from "../../worker/connect.ts";
import type { TunnelEnds } from "../../worker/tunnel.ts";
import { GSSENC_REQUEST, query, SSL_REQUEST, startupMessage, startupRequest } from "../../worker/wire/messages.ts";

/** A server-side WebSocket the test drives: `deliver` is a client frame, `sent` what the bridge sent. */
function fakeSocket() {
  const listeners = new Map<string, ((event: { data: unknown }) => void)[]>();
  const sent: Uint8Array[] = [];
  const closes: number[] = [];
  const socket: TunnelSocket = {
    send: (bytes) => void sent.push(bytes),
    close: (code = 1000) => void closes.push(code),
    addEventListener: (type: string, listener: (event: { data: unknown }) => void) => void listeners.set(type, [...(listeners.get(type) ?? []), listener]),
  } as TunnelSocket;
  const emit = (type: string, data?: unknown) => listeners.get(type)?.forEach((l) => l({ data }));
  return { socket, sent, closes, deliver: (bytes: Uint8Array) => emit("message", bytes.slice().buffer), closeFromClient: () => emit("close") };
}

/** A session stand-in: collects what it reads; `answer` writes to the client. */
function fakeSession() {
  const received: number[] = [];
  let ended: unknown;
  let answer!: TunnelEnds;
  const opened: boolean[] = [];
  const open = (inbound: ReadableStream<Uint8Array>, out: TunnelEnds) => {
    opened.push(true);
    answer = out;
    void (async () => {
      const reader = inbound.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          received.push(...value);
        }
        ended = "done";
      } catch (error) {
        ended = error;
      }
    })();
  };
  return { open, received, opened, answer: (bytes: Uint8Array) => void answer.send(bytes), ended: () => ended };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));
const password = (text: string) => {
  const body = new TextEncoder().encode(`${text}\0`);
  const out = new Uint8Array(5 + body.length);
  out[0] = 0x70;
  new DataView(out.buffer).setInt32(1, 4 + body.length);
  out.set(body, 5);
  return out;
};

describe("tunnel bridge", () => {
  it("token on the upgrade: client frames reach the session in order, its answers go out, a client close ends the session", async () => {
    const { socket, sent, deliver, closeFromClient, closes } = fakeSocket();
    const session = fakeSession();
    bridge(socket, { tenant: "acme", mode: "transaction", open: session.open });
    const startup = startupMessage({ user: "u", database: "acme" });
    deliver(startup);
    deliver(query("select 1"));
    await tick();
    expect(session.received).toEqual([...startup, ...query("select 1")]);
    session.answer(new Uint8Array([0x5a, 0, 0, 0, 5, 0x49]));
    await tick();
    expect(sent).toEqual([new Uint8Array([0x5a, 0, 0, 0, 5, 0x49])]);
    closeFromClient();
    await tick();
    expect(session.ended()).toBeInstanceOf(Error);
    expect(closes).toEqual([1000]);
  });

  it("token as password: SSLRequest and GSSENCRequest get N, the startup waits for a PasswordMessage (split across frames), then reaches the session with what follows", async () => {
    const { socket, sent, deliver } = fakeSocket();
    const session = fakeSession();
    const checked: string[] = [];
    bridge(socket, { tenant: "acme", mode: "session", open: session.open, checkPassword: async (p) => void checked.push(p) });
    deliver(startupRequest(GSSENC_REQUEST));
    deliver(startupRequest(SSL_REQUEST));
    await tick();
    expect(sent).toEqual([new Uint8Array([0x4e]), new Uint8Array([0x4e])]);
    const startup = startupMessage({ user: "u", database: "acme" });
    deliver(startup);
    await tick();
    expect(sent[2]).toEqual(new Uint8Array([0x52, 0, 0, 0, 8, 0, 0, 0, 3]));
    expect(session.opened).toEqual([]);
    const message = password("ep1.good.token");
    deliver(message.subarray(0, 7));
    deliver(message.subarray(7));
    deliver(query("select 2"));
    await tick();
    expect(checked).toEqual(["ep1.good.token"]);
    expect(session.received).toEqual([...startup, ...query("select 2")]);
  });

  it("token as password: a refused token answers FATAL 28000 and closes; the session never opens", async () => {
    const { socket, sent, deliver, closes } = fakeSocket();
    const session = fakeSession();
    bridge(socket, {
      tenant: "acme", mode: "transaction", open: session.open,
      checkPassword: async () => { throw new PoolError("UNAUTHORIZED", "acme", `tenant "acme": token expired`); },
    });
    deliver(startupMessage({ user: "u", database: "acme" }));
    await tick();
    deliver(password("ep1.secret-token-value"));
    await tick();
    const error = new TextDecoder().decode(sent.at(-1));
    expect(error).toMatch(/^E.*SFATAL\0VFATAL\0C28000\0MUNAUTHORIZED: tenant "acme": token expired\0/s);
    expect(error).not.toContain("secret-token-value");
    expect(closes).toEqual([1000]);
    expect(session.opened).toEqual([]);
  });

  it("a client more than 32 MiB ahead of its session is cut off: the session ends and the socket closes with 1011", async () => {
    const { socket, deliver, closes } = fakeSocket();
    // A session that never reads: nothing drains the queue.
    bridge(socket, { tenant: "acme", mode: "transaction", open: () => {} });
    const chunk = new Uint8Array(4 * 1024 * 1024);
    for (let sent = 0; sent <= MAX_INBOUND_QUEUED_BYTES; sent += chunk.length) deliver(chunk);
    await tick();
    expect(closes).toEqual([1011]);
  });

  it("a flood of tiny messages counts against the inbound bound too (each costs its own bookkeeping)", async () => {
    const { socket, deliver, closes } = fakeSocket();
    // A session that never reads.
    bridge(socket, { tenant: "acme", mode: "transaction", open: () => {} });
    const one = new Uint8Array(1);
    for (let i = 0; i < 600_000 && closes.length === 0; i++) deliver(one);
    expect(closes).toEqual([1011]);
  });

  it("answers wait while the client's send buffer is over the high-water mark, and stop waiting when the client goes (a closed socket may keep its count)", async () => {
    const { socket, closeFromClient } = fakeSocket();
    let out!: TunnelEnds;
    bridge(socket, { tenant: "acme", mode: "transaction", open: (_, ends) => void (out = ends) });
    await tick();
    (socket as { bufferedAmount: number }).bufferedAmount = OUTBOUND_HIGH_WATER_BYTES + 1;
    let drained = false;
    void Promise.resolve(out.send(new Uint8Array([0x5a, 0, 0, 0, 5, 0x49]))).then(() => (drained = true));
    await tick();
    expect(drained).toBe(false);
    closeFromClient();
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(drained).toBe(true);
  });

  it("token as password: a client that never sends its password is refused once its time is up (FATAL 28000), and a huge message before it is refused at once", async () => {
    const { socket, sent, deliver, closes } = fakeSocket();
    const session = fakeSession();
    bridge(socket, { tenant: "acme", mode: "transaction", open: session.open, checkPassword: async () => {}, passwordWaitMs: 50 });
    deliver(startupMessage({ user: "u", database: "acme" }));
    await tick();
    expect(sent.map((b) => b[0])).toEqual([0x52]);
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(closes).toEqual([1000]);
    expect(new TextDecoder().decode(sent.at(-1))).toContain("no password (the client token) within 50 ms");
    expect(session.opened).toEqual([]);

    const huge = fakeSocket();
    bridge(huge.socket, { tenant: "acme", mode: "transaction", open: session.open, checkPassword: async () => {} });
    huge.deliver(startupMessage({ user: "u", database: "acme" }));
    // A "password" declared at 1 MiB: more than any token, refused on its header.
    huge.deliver(new Uint8Array([0x70, 0, 0x10, 0, 0]));
    await tick();
    expect(huge.closes).toEqual([1000]);
    expect(session.opened).toEqual([]);
  });
});
