/**
 * A live gateway for the tests: `tunegate run` (the `tunegate` on PATH) on free loopback ports,
 * with a fresh data directory, serving the `local` provider. `stop()` ends the process this
 * started (and its training workers with it) and removes the directory; a process that would
 * otherwise outlive the test runner is killed when the runner exits.
 */

import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

export interface Gateway {
  /** The gRPC address as a Connect base URL: `http://127.0.0.1:<port>`. */
  readonly grpcUrl: string;
  /** The REST edge: `http://127.0.0.1:<port>/v1`. */
  readonly restUrl: string;
  /** The last lines the gateway logged, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

// What `tunegate run` logs once both halves listen (server/tunegate/server/cli.py).
const READY = /tunegate ready: REST (http:\/\/\S+\/v1)\s+gRPC (\S+):(\d+)/;
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
const LOG_LINES = 200;

// Fast local jobs: the watch looks for news often, two jobs train at once, one thread each
// (the machines that run this have two cores).
const CONFIG = `
[server]
watch_poll_seconds = 0.2
local_concurrency = 2
local_train_threads = 1
`;

export async function startGateway(): Promise<Gateway> {
  const dir = await mkdtemp(join(tmpdir(), "tunegate-ts-"));
  const config = join(dir, "tunegate.toml");
  await writeFile(config, CONFIG);
  const child = spawn(
    "tunegate",
    ["run", "--grpc-port", "0", "--http-port", "0", "--data-dir", join(dir, "data"), "--config", config],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, TUNEGATE_LOG_LEVEL: "INFO" } },
  );
  const killOnExit = () => child.kill("SIGKILL");
  process.on("exit", killOnExit);

  const lines: string[] = [];
  const log = () => lines.join("\n");
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;

  const stop = async (): Promise<void> => {
    if (child.pid !== undefined && running()) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    process.off("exit", killOnExit);
    await rm(dir, { recursive: true, force: true });
  };

  const ready = new Promise<{ restUrl: string; grpcUrl: string }>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`tunegate run did not start in ${START_TIMEOUT_MS} ms:\n${log()}`)),
      START_TIMEOUT_MS,
    );
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start \`tunegate run\` (is the tunegate virtualenv's bin on PATH?): ${err.message}`));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`tunegate run exited (${code ?? signal}) before it was ready:\n${log()}`));
    });
    createInterface({ input: child.stderr! }).on("line", (line) => {
      lines.push(line);
      if (lines.length > LOG_LINES) lines.shift();
      const match = READY.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve({ restUrl: match[1]!, grpcUrl: `http://${match[2]}:${match[3]}` });
      }
    });
  });

  try {
    const { restUrl, grpcUrl } = await ready;
    return { restUrl, grpcUrl, log, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
