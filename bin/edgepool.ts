#!/usr/bin/env node
// The `edgepool` command. Today one subcommand:
//   edgepool proxy <coordinator-url> --tenant <name> [--port 6432] [--host 127.0.0.1] [--mode transaction|session]
// The client token comes from EDGEPOOL_TOKEN; without it, each client sends the token as its password.
import { isIP } from "node:net";
import { parseArgs } from "node:util";
import { isLoopbackHost } from "../src/websocket.ts";
import { startProxy } from "./proxy.ts";

const USAGE = `usage: edgepool proxy <coordinator-url> --tenant <name> [--port 6432] [--host 127.0.0.1] [--mode transaction|session]
  The client token is read from EDGEPOOL_TOKEN (never from the command line). Without it,
  each client must send the token as its password (psql: PGPASSWORD or a password prompt).`;

const log = (line: string) => process.stderr.write(`${line}\n`);

function fail(message: string): never {
  log(`edgepool: ${message}\n${USAGE}`);
  process.exit(2);
}

async function proxy(args: string[]): Promise<void> {
  if (args.includes("--help") || args.includes("-h")) return void process.stdout.write(`${USAGE}\n`);
  // A token on the command line would show in `ps`: refuse it before anything else, without echoing it.
  if (args.some((a) => /^--?(token|password)(=|$)/.test(a))) fail("pass the token in the EDGEPOOL_TOKEN environment variable, not on the command line (it would show in process listings)");
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        tenant: { type: "string" },
        port: { type: "string", default: "6432" },
        host: { type: "string", default: "127.0.0.1" },
        mode: { type: "string", default: "transaction" },
      },
    });
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) fail("one coordinator URL is needed");
  if (!values.tenant) fail("--tenant is required");
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port must be 0-65535, got ${JSON.stringify(values.port)}`);
  const mode = values.mode;
  if (mode !== "transaction" && mode !== "session") fail(`--mode must be transaction or session, got ${JSON.stringify(mode)}`);
  const host = values.host!;
  if (!isLoopbackHost(host) && !(isIP(host) === 6 && host === "::1")) {
    log(`edgepool proxy: WARNING: listening on ${host}, not loopback: anyone who can reach this port uses tenant "${values.tenant}"${process.env.EDGEPOOL_TOKEN ? " with this proxy's token" : ""}`);
  }
  const token = process.env.EDGEPOOL_TOKEN || undefined;
  // Child processes need not see it.
  delete process.env.EDGEPOOL_TOKEN;
  let running;
  try {
    running = await startProxy({ url: positionals[0]!, tenant: values.tenant, mode, token, host, port, log });
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
  }
  const origin = new URL(positionals[0]!).origin;
  log(`edgepool proxy: listening on ${running.host}:${running.port} for tenant "${values.tenant}" at ${origin} (${mode} mode, ${token ? "token from EDGEPOOL_TOKEN" : "token as the client's password"})`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`edgepool proxy: ${signal}: closing ${running.sessions} client connection(s)`);
    await running.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

const [command, ...rest] = process.argv.slice(2);
if (command === "proxy") await proxy(rest);
else if (command === "--help" || command === "-h" || command === "help") process.stdout.write(`${USAGE}\n`);
else fail(command ? `unknown command ${JSON.stringify(command)}` : "a command is needed");
