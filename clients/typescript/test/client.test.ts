/**
 * The generated client against a live `tunegate run` on the local provider, over plain gRPC
 * (Connect's Node gRPC transport, HTTP/2): Uploads' client stream, a job followed with the
 * watch stream to success, its events and checkpoints, a cancelled job, the result file
 * downloaded, and rich errors (status code, ErrorInfo reason, BadRequest field). Every call
 * carries Portkey's routing keys as metadata, as the REST edge's headers would.
 */

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  type AddUploadPartRequest,
  AddUploadPartRequestSchema,
  BadRequestSchema,
  ErrorInfoSchema,
  FilePurpose,
  Files,
  FineTuning,
  type FineTuningJob,
  type FineTuningJobEvent,
  type FineTuningJobUpdate,
  JobStatus,
  MethodType,
  UploadStatus,
  Uploads,
} from "@tunegate/client";

import { type Gateway, startGateway } from "./gateway.js";

const MODEL = "tunegate-tiny";
const TERMINAL = new Set([JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]);

/** 12 tiny chat examples (OpenAI's minimum is 10), as the Python end-to-end tests use. */
function trainingData(): Uint8Array {
  const lines = Array.from({ length: 12 }, (_, i) => {
    const word = `w${i % 4}`;
    return JSON.stringify({
      messages: [
        { role: "user", content: `Say ${word}.` },
        { role: "assistant", content: word },
      ],
    });
  });
  return new TextEncoder().encode(lines.map((line) => line + "\n").join(""));
}

/** Portkey's routing keys as gRPC metadata: the caller's credential (its owner scope) and the
 * provider, exactly the keys the REST edge forwards from headers. */
function portkey(apiKey: string, provider = "local"): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${apiKey}`);
    req.header.set("x-portkey-provider", provider);
    return next(req);
  };
}

/** The code, ErrorInfo and first BadRequest field of a failed call. */
function richError(err: unknown): { code: Code; reason?: string; domain?: string; field?: string } {
  assert.ok(err instanceof ConnectError, `not a ConnectError: ${String(err)}`);
  const [info] = err.findDetails(ErrorInfoSchema);
  const [bad] = err.findDetails(BadRequestSchema);
  return { code: err.code, reason: info?.reason, domain: info?.domain, field: bad?.fieldViolations[0]?.field };
}

async function* partMessages(uploadId: string, bytes: Uint8Array, chunkSize: number): AsyncIterable<AddUploadPartRequest> {
  // The part's size first (the server stores the part only if exactly that many bytes arrive),
  // then its bytes in several `chunk` messages.
  yield create(AddUploadPartRequestSchema, {
    payload: { case: "metadata", value: { uploadId, bytes: BigInt(bytes.length) } },
  });
  for (let at = 0; at < bytes.length; at += chunkSize) {
    yield create(AddUploadPartRequestSchema, { payload: { case: "chunk", value: bytes.subarray(at, at + chunkSize) } });
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

describe("tunegate over gRPC from TypeScript", { timeout: 110_000 }, () => {
  let gateway: Gateway;
  let files: Client<typeof Files>;
  let uploads: Client<typeof Uploads>;
  let jobs: Client<typeof FineTuning>;
  const data = trainingData();
  let trainingFileId = "";

  before(async () => {
    gateway = await startGateway();
    const transport = createGrpcTransport({
      baseUrl: gateway.grpcUrl,
      interceptors: [portkey(`sk-ts-${randomBytes(12).toString("hex")}`)],
    });
    files = createClient(Files, transport);
    uploads = createClient(Uploads, transport);
    jobs = createClient(FineTuning, transport);
  });

  after(async () => {
    await gateway?.stop();
  });

  test("uploads a file in two parts through the client-streaming AddUploadPart", async () => {
    const upload = await uploads.createUpload({
      filename: "train.jsonl",
      purpose: FilePurpose.FINE_TUNE,
      bytes: BigInt(data.length),
      mimeType: "text/jsonl",
    });
    assert.match(upload.id, /^upload_/);
    assert.equal(upload.status, UploadStatus.PENDING);

    const half = Math.floor(data.length / 2);
    const first = await uploads.addUploadPart(partMessages(upload.id, data.subarray(0, half), 100));
    const second = await uploads.addUploadPart(partMessages(upload.id, data.subarray(half), 100));
    assert.equal(first.uploadId, upload.id);
    assert.notEqual(first.id, second.id);

    const md5 = createHash("md5").update(data).digest("hex");
    const done = await uploads.completeUpload({ uploadId: upload.id, partIds: [first.id, second.id], md5 });
    assert.equal(done.status, UploadStatus.COMPLETED);
    assert.ok(done.file, "a completed upload carries its file");
    assert.equal(done.file.bytes, BigInt(data.length));
    assert.equal(done.file.purpose, FilePurpose.FINE_TUNE);

    const file = await files.getFile({ fileId: done.file.id });
    assert.equal(file.filename, "train.jsonl");
    const content: Uint8Array[] = [];
    for await (const body of files.getFileContent({ fileId: file.id })) content.push(body.data);
    assert.deepEqual(concat(content), data, "the parts were assembled in order");
    trainingFileId = file.id;
  });

  test("creates a job, watches it to success, lists its events and checkpoints, downloads its result", async () => {
    assert.ok(trainingFileId, "needs the uploaded file");
    const created = await jobs.createFineTuningJob({
      model: MODEL,
      trainingFile: trainingFileId,
      suffix: "ts",
      seed: 7n,
      metadata: { values: { client: "typescript" } },
      method: {
        type: MethodType.SUPERVISED,
        supervised: {
          hyperparameters: {
            nEpochs: { kind: { case: "value", value: 2n } },
            batchSize: { kind: { case: "value", value: 4n } },
          },
        },
      },
    });
    assert.match(created.id, /^ftjob-/);
    assert.equal(created.trainingFile, trainingFileId);
    assert.deepEqual(created.metadata?.values, { client: "typescript" });

    const updates: FineTuningJobUpdate["update"][] = [];
    for await (const message of jobs.watchFineTuningJob({ fineTuningJobId: created.id }, { timeoutMs: 90_000 })) {
      updates.push(message.update);
    }
    const watchedJobs: FineTuningJob[] = updates.flatMap((u) => (u.case === "job" ? [u.value] : []));
    const watchedEvents: FineTuningJobEvent[] = updates.flatMap((u) => (u.case === "event" ? [u.value] : []));
    assert.equal(updates[0]?.case, "job", "the job comes first");
    assert.equal(updates.at(-1)?.case, "job", "the terminal job comes last");
    const statuses = watchedJobs.map((job) => job.status);
    statuses.slice(1).forEach((status, i) => assert.notEqual(status, statuses[i], "sent again only on a change"));
    const job = watchedJobs.at(-1)!;
    assert.equal(job.status, JobStatus.SUCCEEDED, `${JobStatus[job.status]}: ${job.error?.message}`);
    assert.match(job.fineTunedModel ?? "", /^ft:tunegate-tiny:local:ts:/);
    assert.ok((job.trainedTokens ?? 0n) > 0n && job.finishedAt !== undefined);
    assert.equal(job.seed, 7n);

    // The events list (newest first) holds exactly what the watch sent, oldest first.
    const events = await jobs.listFineTuningEvents({ fineTuningJobId: job.id, limit: 100 });
    assert.equal(events.hasMore, false);
    assert.deepEqual(
      watchedEvents.map((e) => e.id),
      events.data.map((e) => e.id).reverse(),
    );
    assert.equal(events.data[0]?.message, "The job has successfully completed");

    // A checkpoint per epoch, newest first, with the training metrics.
    const checkpoints = await jobs.listFineTuningCheckpoints({ fineTuningJobId: job.id });
    assert.ok(checkpoints.data.length >= 2, `${checkpoints.data.length} checkpoints`);
    const steps = checkpoints.data.map((c) => c.stepNumber);
    assert.deepEqual(steps, [...steps].sort((a, b) => (a > b ? -1 : a < b ? 1 : 0)));
    for (const checkpoint of checkpoints.data) {
      assert.equal(checkpoint.fineTuningJobId, job.id);
      assert.ok(checkpoint.metrics?.trainLoss !== undefined && checkpoint.metrics.trainLoss > 0);
    }

    // The result file: step metrics as CSV, streamed as HttpBody chunks.
    assert.equal(job.resultFiles.length, 1);
    const resultId = job.resultFiles[0]!;
    const result = await files.getFile({ fileId: resultId });
    assert.equal(result.purpose, FilePurpose.FINE_TUNE_RESULTS);
    let headers: Headers | undefined;
    const chunks: Uint8Array[] = [];
    let contentType = "";
    for await (const body of files.getFileContent({ fileId: resultId }, { onHeader: (h) => (headers = h) })) {
      contentType ||= body.contentType;
      chunks.push(body.data);
    }
    const csv = new TextDecoder().decode(concat(chunks));
    assert.equal(BigInt(concat(chunks).length), result.bytes);
    assert.equal(headers?.get("x-content-length"), String(result.bytes));
    assert.match(headers?.get("content-disposition") ?? "", /attachment/);
    assert.match(contentType, /csv/);
    const [header, ...rows] = csv.trim().split("\n");
    assert.match(header ?? "", /^step,train_loss/);
    assert.ok(rows.length >= 2, csv);
  });

  test("cancels a running job", async () => {
    assert.ok(trainingFileId, "needs the uploaded file");
    const long = await jobs.createFineTuningJob({
      model: MODEL,
      trainingFile: trainingFileId,
      hyperparameters: {
        nEpochs: { kind: { case: "value", value: 50n } },
        batchSize: { kind: { case: "value", value: 1n } },
      },
    });
    // Wait until the trainer has taken it. (An AbortSignal bounds this watch, not `timeoutMs`:
    // Connect keeps a deadline's timer when a stream is left early, which holds the process.)
    for await (const message of jobs.watchFineTuningJob({ fineTuningJobId: long.id }, { signal: AbortSignal.timeout(60_000) })) {
      if (message.update.case === "job" && message.update.value.status === JobStatus.RUNNING) break;
      if (message.update.case === "job") assert.ok(!TERMINAL.has(message.update.value.status));
    }
    const cancelled = await jobs.cancelFineTuningJob({ fineTuningJobId: long.id });
    assert.equal(cancelled.status, JobStatus.CANCELLED);
    assert.equal((await jobs.getFineTuningJob({ fineTuningJobId: long.id })).status, JobStatus.CANCELLED);
    assert.equal(cancelled.fineTunedModel, undefined);
    // A watch of a finished job sends the job (terminal), then its events, and ends at once.
    const again: FineTuningJobUpdate["update"][] = [];
    for await (const message of jobs.watchFineTuningJob({ fineTuningJobId: long.id }, { timeoutMs: 10_000 })) {
      again.push(message.update);
    }
    const [head, ...rest] = again;
    assert.ok(head?.case === "job" && head.value.status === JobStatus.CANCELLED);
    assert.ok(rest.every((u) => u.case === "event"));
    assert.ok(again.some((u) => u.case === "event" && /cancel/i.test(u.value.message)), "a cancellation event");
  });

  test("a bad request is a rich error: status code, ErrorInfo reason, BadRequest field", async () => {
    const missing = await uploads
      .createUpload({ filename: "x.jsonl", bytes: 10n, mimeType: "text/jsonl" })
      .then(() => assert.fail("an upload without a purpose was accepted"), richError);
    assert.deepEqual(missing, {
      code: Code.InvalidArgument,
      reason: "MISSING_REQUIRED_PARAMETER",
      domain: "tunegate",
      field: "purpose",
    });

    const badLimit = await jobs.listFineTuningJobs({ limit: 0 }).then(() => assert.fail("limit 0 was accepted"), richError);
    assert.deepEqual(badLimit, { code: Code.InvalidArgument, reason: "INVALID_VALUE", domain: "tunegate", field: "limit" });
  });

  test("metadata routes the call: an unknown provider is refused, another caller sees nothing", async () => {
    const elsewhere = (provider: string, apiKey: string) =>
      createGrpcTransport({ baseUrl: gateway.grpcUrl, interceptors: [portkey(apiKey, provider)] });

    const unknown = createClient(FineTuning, elsewhere("nonesuch", "sk-ts-unknown"));
    const refused = await unknown
      .createFineTuningJob({ model: MODEL, trainingFile: trainingFileId || "file-x" })
      .then(() => assert.fail("an unknown provider was accepted"), richError);
    assert.deepEqual(refused, {
      code: Code.InvalidArgument,
      reason: "UNKNOWN_PROVIDER",
      domain: "tunegate",
      field: "x-portkey-provider",
    });

    assert.ok(trainingFileId, "needs the uploaded file");
    const stranger = createClient(Files, elsewhere("local", `sk-ts-${randomBytes(12).toString("hex")}`));
    const hidden = await stranger.getFile({ fileId: trainingFileId }).then(() => assert.fail("another owner's file was served"), richError);
    assert.equal(hidden.code, Code.NotFound);
    assert.equal(hidden.reason, "FILE_NOT_FOUND");
    assert.deepEqual((await stranger.listFiles({})).data, []);
  });
});
