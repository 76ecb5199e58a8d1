/**
 * The README's TypeScript example stays true: it is type-checked against this package (strict)
 * and run, as the README says to run it, against a live gateway.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import ts from "typescript";

import { type Gateway, startGateway } from "./gateway.js";

const HERE = dirname(fileURLToPath(import.meta.url)); // clients/typescript/build-test
const README = join(HERE, "..", "..", "..", "README.md");
// Inside the package, so `@tunegate/client` resolves to this package's build (self-reference).
const WORK = join(HERE, "readme");

/** The README's ```typescript block that connects (there must be exactly one). */
async function example(): Promise<string> {
  const blocks = [...(await readFile(README, "utf8")).matchAll(/^```typescript\n([\s\S]*?)^```$/gm)]
    .map((match) => match[1]!)
    .filter((body) => body.includes("createGrpcTransport"));
  assert.equal(blocks.length, 1, "README.md should have one TypeScript example that connects");
  return blocks[0]!;
}

/** Type-checks and compiles `path` (a .mts file) next to itself; returns the .mjs path. */
function compile(path: string): string {
  const program = ts.createProgram([path], {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    skipLibCheck: true,
    types: ["node"],
  });
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...program.emit().diagnostics];
  const text = ts.formatDiagnostics(diagnostics, {
    getCanonicalFileName: (name) => name,
    getCurrentDirectory: () => WORK,
    getNewLine: () => "\n",
  });
  assert.equal(text, "", "the README's TypeScript example does not type-check");
  return path.replace(/\.mts$/, ".mjs");
}

let gateway: Gateway;

before(async () => {
  gateway = await startGateway();
  await mkdir(WORK, { recursive: true });
});

after(async () => {
  await gateway?.stop();
  await rm(WORK, { recursive: true, force: true });
});

test("the README's TypeScript example lists files and reads a rich error", async () => {
  const source = await example();
  assert.ok(source.includes('"http://127.0.0.1:50051"'), "the example connects to make run's gRPC port");
  const path = join(WORK, "quickstart.mts");
  await writeFile(path, source.replace('"http://127.0.0.1:50051"', JSON.stringify(gateway.grpcUrl)));
  const { stdout } = await promisify(execFile)(process.execPath, [compile(path)], { timeout: 30_000 });
  const [files, error, ...rest] = stdout.trim().split("\n");
  assert.equal(files, "[]", "a new caller has no files");
  assert.equal(error, "InvalidArgument INVALID_VALUE limit limit must be between 1 and 10000.");
  assert.deepEqual(rest, []);
});
