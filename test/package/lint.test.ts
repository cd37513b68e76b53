// The packed package as its users' tools see it: publint (package.json against the files) and
// Are the Types Wrong (types resolve for every entry point under node16 and bundler resolution).
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { publint } from "publint";
import { formatMessage } from "publint/utils";
import { describe, expect, inject, it } from "vitest";

const tarball = inject("tarball");

describe("the packed package", () => {
  it("holds only what users run, its types, README, LICENSE and CHANGELOG", () => {
    const files = inject("packedFiles");
    expect(files.filter((f) => !/^dist\/[\w-]+\.(js|d\.ts)$/.test(f))).toEqual(["CHANGELOG.md", "LICENSE", "README.md", "package.json"]);
    for (const entry of ["dist/index.js", "dist/index.d.ts", "dist/worker.js", "dist/worker.d.ts", "dist/edgepool.js"]) expect(files).toContain(entry);
  });

  it("publint --strict finds nothing, at every level", async () => {
    const buffer = readFileSync(tarball);
    const { messages, pkg } = await publint({ pack: { tarball: buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) }, level: "suggestion", strict: true });
    expect(messages.map((m) => `${m.type}: ${formatMessage(m, pkg)}`)).toEqual([]);
  });

  it("attw finds no problem under node16 (ESM) and bundler resolution (esm-only profile: there is no CommonJS build)", async () => {
    const attw = promisify(execFile)(process.execPath, ["node_modules/@arethetypeswrong/cli/dist/index.js", tarball, "--profile", "esm-only", "--no-color", "--no-emoji"]);
    const result = await attw.then((r) => ({ code: 0, ...r }), (e: { code: number; stdout: string; stderr: string }) => e);
    expect(result.code, `${result.stdout}${result.stderr}`).toBe(0);
    for (const entry of ['"edgepool"', '"edgepool/worker"']) expect(result.stdout).toContain(entry);
  });
});
