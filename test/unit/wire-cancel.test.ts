import { describe, expect, it } from "vitest";
import { CancelKeys } from "../../worker/wire/cancel.ts";
import { fe, makeWire } from "./wire-helpers.ts";

describe("cancel keys", () => {
  it("each session gets its own key; a CancelRequest cancels only the session owning that exact key", async () => {
    const wire = makeWire();
    const a = wire.client({ startup: true });
    const b = wire.client({ startup: true });
    await a.send(fe.startup({ user: "u" }), fe.query("sleep"));
    await b.send(fe.startup({ user: "u" }), fe.query("sleep"));
    expect(a.session.key.pid).not.toBe(b.session.key.pid);
    const [ba, bb] = wire.driver.backends;
    const canceller = wire.client({ startup: true });
    await canceller.send(fe.cancel(a.session.key.pid, b.session.key.secret));
    expect(ba!.cancels + bb!.cancels).toBe(0);
    expect(canceller.closed).toBe(true);
    expect(canceller.received).toEqual([]);
    const right = wire.client({ startup: true });
    await right.send(fe.cancel(a.session.key.pid, a.session.key.secret));
    const aBackend = a.session.backend!;
    expect(aBackend.cancels).toBe(1);
    expect((aBackend === ba ? bb : ba)!.cancels).toBe(0);
    expect(right.received).toEqual([]);
  });

  it("a session with no backend attached: nothing is sent", async () => {
    const wire = makeWire();
    const a = wire.client({ startup: true });
    await a.send(fe.startup({ user: "u" }), fe.query("select 'done'"));
    expect(await wire.cancelKeys.cancel(a.session.key.pid, a.session.key.secret)).toBe(false);
    expect(wire.driver.backends[0]!.cancels).toBe(0);
  });

  it("a key is revoked when its session ends", async () => {
    const wire = makeWire();
    const a = wire.client();
    const { pid, secret } = a.session.key;
    expect(wire.cancelKeys.find(pid, secret)).toBe(a.session);
    a.session.end();
    expect(wire.cancelKeys.find(pid, secret)).toBeUndefined();
  });

  it("pids are unique among live sessions even when the random source repeats", () => {
    const draws = [5, 1, 5, 2, 5, 5, 7, 3];
    const keys = new CancelKeys(() => draws.shift() ?? 9);
    const t = { cancel: async () => true };
    const k1 = keys.issue(t);
    const k2 = keys.issue(t);
    const k3 = keys.issue(t);
    expect(new Set([k1.pid, k2.pid, k3.pid]).size).toBe(3);
  });
});
