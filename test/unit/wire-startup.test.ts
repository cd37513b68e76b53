import { describe, expect, it } from "vitest";
import { GSSENC_REQUEST, startupMessage, startupRequest } from "../../worker/wire/messages.ts";
import { PoolError } from "../../src/errors.ts";
import { fe, makeWire } from "./wire-helpers.ts";

describe("startup", () => {
  it("answers a StartupMessage with AuthenticationOk, the server's ParameterStatus, our BackendKeyData and ReadyForQuery I", async () => {
    const wire = makeWire();
    const c = wire.client({ startup: true });
    await c.send(fe.startup({ user: "u", database: "d", application_name: "app" }));
    expect(c.types()).toBe("R S S K Z");
    expect(c.received[1]!.bytes).toContain("server_version".charCodeAt(0));
    const key = c.received[3]!.bytes;
    const view = new DataView(key.buffer, key.byteOffset);
    expect(view.getInt32(5)).toBe(c.session.key.pid);
    expect(view.getInt32(9)).toBe(c.session.key.secret);
    expect(c.received[4]!.text).toBe("I");
    // transaction mode: no server connection was taken for the startup
    expect(wire.pool.stats().leased).toBe(0);
  });

  it("a transaction-mode startup whose ParameterStatus values cannot be read (no server connection) ends FATAL with the pool's error, not a silent close", async () => {
    const wire = makeWire();
    const c = wire.client({
      startup: true,
      parameters: async () => {
        throw new PoolError("CONNECT_FAILED", "acme", "could not connect to db.example:5432: connection refused");
      },
    });
    await c.send(fe.startup({ user: "u" }));
    expect(c.types()).toBe("E");
    expect(c.received[0]!.fields!.get("S")).toBe("FATAL");
    expect(c.received[0]!.fields!.get("C")).toBe("08001");
    expect(c.received[0]!.text).toMatch(/^CONNECT_FAILED: could not connect to db.example:5432/);
    expect(c.closed).toBe(true);
    expect(c.session.closed).toBe(true);
  });

  it("answers SSLRequest and GSSENCRequest with N, then takes the StartupMessage", async () => {
    const wire = makeWire();
    const c = wire.client({ startup: true });
    c.expectSslAnswer();
    await c.send(fe.ssl());
    expect(c.types()).toBe("N");
    c.expectSslAnswer();
    await c.send(startupRequest(GSSENC_REQUEST));
    expect(c.types()).toBe("N N");
    await c.send(fe.startup({ user: "u" }), fe.query("select 'x'"));
    expect(c.types()).toBe("N N R S S K Z T D C Z");
  });

  it("takes the startup exchange one byte at a time", async () => {
    const wire = makeWire();
    const c = wire.client({ startup: true });
    const bytes = new Uint8Array([...fe.startup({ user: "u" }), ...fe.query("select 'one'")]);
    for (const b of bytes) await c.send(new Uint8Array([b]));
    expect(c.types()).toBe("R S S K Z T D C Z");
    expect(c.received[6]!.text).toBe("one");
  });

  it("refuses protocol 2.0 with FATAL 08P01 and closes", async () => {
    const c = makeWire().client({ startup: true });
    await c.send(startupMessage({ user: "u" }, 2 << 16));
    expect(c.types()).toBe("E");
    expect(c.received[0]!.fields!.get("S")).toBe("FATAL");
    expect(c.received[0]!.fields!.get("C")).toBe("08P01");
    expect(c.received[0]!.text).toMatch(/^BAD_REQUEST: unsupported frontend protocol 2\.0/);
    expect(c.closed).toBe(true);
  });

  it("answers protocol 3.2 and _pq_ options with NegotiateProtocolVersion (3.0), then goes on", async () => {
    const c = makeWire().client({ startup: true });
    await c.send(startupMessage({ user: "u", _pq_x: "1", "_pq_.compression": "on" }, (3 << 16) | 2));
    expect(c.types()).toBe("v R S S K Z");
    expect(c.closed).toBe(false);
  });

  it("Terminate ends the session and closes the transport", async () => {
    const wire = makeWire();
    const c = wire.client({ startup: true });
    await c.send(fe.startup({ user: "u" }), fe.terminate());
    expect(c.closed).toBe(true);
    expect(c.session.closed).toBe(true);
    expect(wire.stats.clients).toBe(0);
    expect(wire.cancelKeys.size).toBe(0);
  });

  it("a typed message before the StartupMessage is a protocol violation (FATAL 08P01)", async () => {
    const c = makeWire().client({ startup: true });
    await c.send(new Uint8Array([0, 0, 0, 3, 0, 0, 0, 0]));
    expect(c.received[0]!.fields!.get("C")).toBe("08P01");
    expect(c.closed).toBe(true);
  });

  it("a message with an invalid length is a protocol violation (FATAL 08P01)", async () => {
    const c = makeWire().client();
    await c.send(new Uint8Array([0x51, 0, 0, 0, 2]));
    expect(c.received[0]!.fields!.get("C")).toBe("08P01");
    expect(c.received[0]!.fields!.get("S")).toBe("FATAL");
    expect(c.closed).toBe(true);
  });

  it("a session started without a startup exchange (the built-in client) is ready at once", async () => {
    const c = makeWire().client({ startup: false });
    await c.send(fe.query("select 'x'"));
    expect(c.types()).toBe("T D C Z");
  });
});
