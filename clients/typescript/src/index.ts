/**
 * The tunegate gRPC API for TypeScript: protobuf-es messages (`FileSchema`, `FineTuningJob`, …)
 * and the service descriptors (`Files`, `Uploads`, `FineTuning`, `Models`, `ChatCompletions`,
 * `WebhookEndpoints`, `ApiKeys`, `VirtualKeys`) that `createClient` from `@connectrpc/connect` turns into clients, over
 * `createGrpcTransport` from `@connectrpc/connect-node` (plain gRPC over HTTP/2).
 *
 * Everything under `./gen` is generated from `proto/` by `make proto` (buf.gen.yaml at the
 * repository root); this file only re-exports it. Also re-exported: `google.api.HttpBody` (the
 * chunks of `Files.GetFileContent`) and `google.rpc`'s error details (`ErrorInfoSchema`,
 * `BadRequestSchema`, `RetryInfoSchema`, …) to read a `ConnectError` with `findDetails`.
 */

export * from "./gen/tunegate/v1/admin_pb.js";
export * from "./gen/tunegate/v1/chat_pb.js";
export * from "./gen/tunegate/v1/files_pb.js";
export * from "./gen/tunegate/v1/fine_tuning_pb.js";
export * from "./gen/tunegate/v1/models_pb.js";
export * from "./gen/tunegate/v1/uploads_pb.js";
export * from "./gen/tunegate/v1/webhooks_pb.js";
export * from "./gen/google/api/httpbody_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
