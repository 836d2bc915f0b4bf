#!/usr/bin/env node
// Ask the LLM Twin RAG service a question over gRPC and print the answer as it streams in.
//
//   node ask.js "How do I build a feature pipeline?" [--target 127.0.0.1:50051] [--author "Paul Iusztin"]
//               [--top-k 3] [--max-new-tokens 256] [--timeout 120] [--request-id ID]
//               [--then "a follow-up question" ...] [--conversation-id ID]
//
// Each --then asks a follow-up once the previous answer is done, sending the questions and answers so far as the
// request's history (the service is stateless) and one conversation id (a new UUID unless given).
// Prints the retrieved sources first (one per document, numbered as the answer cites them, with the evidence
// that picked them), then the answer text token by token, then the sources it cited, then a summary line on
// stderr.
// On a gRPC error it prints the status (code, message, ErrorInfo reason, field violations) and exits 1.
"use strict";

const path = require("node:path");
const { parseArgs } = require("node:util");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");

// google.rpc.Status and the details our services attach (servekit/errors.py), to decode
// the grpc-status-details-bin trailer without shipping Google's protos.
const ERROR_TYPES = protobuf.parse(`
  syntax = "proto3";
  package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
  message BadRequest {
    message FieldViolation { string field = 1; string description = 2; }
    repeated FieldViolation field_violations = 1;
  }
`, { keepCase: true }).root;

function usage(message) {
  if (message) process.stderr.write(`${message}\n`);
  process.stderr.write(
    'usage: node ask.js "question" [--target host:port] [--author NAME] [--top-k N]\n' +
      "                   [--max-new-tokens N] [--timeout SECONDS] [--request-id ID]\n" +
      '                   [--then "follow-up" ...] [--conversation-id ID]\n',
  );
  process.exit(2);
}

function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        target: { type: "string", default: "127.0.0.1:50051" },
        author: { type: "string", default: "" },
        "top-k": { type: "string" },
        "max-new-tokens": { type: "string" },
        timeout: { type: "string", default: "120" },
        "request-id": { type: "string", default: "" },
        then: { type: "string", multiple: true, default: [] },
        "conversation-id": { type: "string", default: "" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (error) {
    usage(error.message);
  }
  const { values, positionals } = parsed;
  if (values.help) usage();
  if (positionals.length === 0) usage("a question is required");
  return { question: positionals.join(" "), ...values };
}

function loadRagService() {
  const definition = protoLoader.loadSync(path.join(PROTOS, "llmtwin/rag/v1/rag_service.proto"), {
    includeDirs: [PROTOS],
    keepCase: true, // field names as in the contract: author_full_name, finish_reason, ...
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true, // message.event names the oneof member that is set
  });
  return grpc.loadPackageDefinition(definition).llmtwin.rag.v1.RagService;
}

function buildRequest(args) {
  const options = {};
  if (args.author) options.author = args.author;
  if (args["top-k"] !== undefined) options.top_k = Number(args["top-k"]);
  const parameters = {};
  if (args["max-new-tokens"] !== undefined) parameters.max_new_tokens = Number(args["max-new-tokens"]);
  return { query: args.question, options, parameters, request_id: args["request-id"] };
}

// One entry per source document; a service older than `sources` sends only chunks, numbered as its prompt did.
function sourcesOf(context) {
  const sources = context.sources || [];
  if (sources.length) return sources;
  return (context.documents || []).map((doc, i) => ({ ...doc, number: i + 1, chunks: [doc], evidence: "" }));
}

function printSources(context) {
  const out = process.stdout;
  out.write("Sources:\n");
  const sources = sourcesOf(context);
  if (sources.length === 0) out.write("  (none)\n");
  for (const source of sources) {
    const kind = String(source.kind).replace("CONTENT_KIND_", "").toLowerCase();
    const author = source.author_full_name || source.author_id;
    const chunks = (source.chunks || []).length;
    const passages = chunks > 1 ? `, ${chunks} passages` : "";
    out.write(
      `  ${source.number}. ${source.title || source.document_id} — ${author} (${kind}) ` +
        `score ${source.score.toFixed(3)}${passages}\n`,
    );
    if (source.link) out.write(`     ${source.link}\n`);
    if (source.evidence) out.write(`     "${source.evidence}"\n`);
  }
  out.write("\nAnswer:\n");
}

function printCitations(final) {
  const citations = final.citations || [];
  if (citations.length === 0) return;
  const out = process.stdout;
  out.write("\nCited:\n");
  for (const c of citations) {
    out.write(`  [${c.number}] ${c.title || c.document_id}${c.link ? ` ${c.link}` : ""}\n`);
  }
}

function printSummary(final) {
  const usage = final.usage || {};
  const reason = String(final.finish_reason).replace("FINISH_REASON_", "").toLowerCase();
  process.stderr.write(
    `[${usage.completion_tokens || 0} tokens, ${reason}, first token ${final.time_to_first_token_s.toFixed(2)} s, ` +
      `total ${final.total_time_s.toFixed(2)} s, model ${final.model_id}, request ${final.request_id}]\n`,
  );
}

// The status line, plus the ErrorInfo reason and BadRequest violations when the trailer carries them.
function describeError(error) {
  const lines = [`error: ${grpc.status[error.code] || "UNKNOWN"} (${error.code}): ${error.details}`];
  const raw = error.metadata && error.metadata.get("grpc-status-details-bin")[0];
  if (raw) {
    try {
      const status = ERROR_TYPES.lookupType("google.rpc.Status").decode(raw);
      for (const detail of status.details) {
        const typeName = detail.type_url.split("/").pop();
        if (typeName === "google.rpc.ErrorInfo") {
          const info = ERROR_TYPES.lookupType(typeName).decode(detail.value);
          lines.push(`  reason: ${info.reason} (${info.domain})`);
        } else if (typeName === "google.rpc.BadRequest") {
          const bad = ERROR_TYPES.lookupType(typeName).decode(detail.value);
          for (const v of bad.field_violations) lines.push(`  field ${v.field}: ${v.description}`);
        }
      }
    } catch (decodeError) {
      lines.push(`  (undecodable status details: ${decodeError.message})`);
    }
  }
  return lines.join("\n") + "\n";
}

// One streamed answer: sources, answer text, citations, summary; resolves with the final message, rejects with the
// gRPC error (already printed).
function askOnce(client, args, request) {
  const metadata = new grpc.Metadata();
  if (args["request-id"]) metadata.set("x-request-id", args["request-id"]);
  const deadline = new Date(Date.now() + Number(args.timeout) * 1000);
  return new Promise((resolve, reject) => {
    const call = client.AnswerStream(request, metadata, { deadline });
    let answered = false;
    let final = null;
    const onSigint = () => call.cancel();
    // Ctrl-C cancels the call, which stops the generation in the service.
    process.once("SIGINT", onSigint);
    call.on("data", (message) => {
      if (message.event === "context") {
        printSources(message.context);
      } else if (message.event === "delta") {
        answered = true;
        process.stdout.write(message.delta.text);
      } else if (message.event === "final") {
        if (answered) process.stdout.write("\n");
        final = message.final;
        printCitations(final);
        printSummary(final);
      }
    });
    call.on("error", (error) => {
      process.removeListener("SIGINT", onSigint);
      if (answered && !final) process.stdout.write("\n");
      process.stderr.write(describeError(error));
      reject(error);
    });
    call.on("end", () => {
      process.removeListener("SIGINT", onSigint);
      resolve(final);
    });
  });
}

// A v4 UUID for the conversation's id when none is given.
function newConversationId() {
  return require("node:crypto").randomUUID();
}

async function main() {
  const args = parseCommandLine(process.argv.slice(2));
  const RagService = loadRagService();
  const client = new RagService(args.target, grpc.credentials.createInsecure());
  const questions = [args.question, ...args.then];
  // The service is stateless: every follow-up carries the conversation so far.
  const conversationId = args["conversation-id"] || (questions.length > 1 ? newConversationId() : "");
  const history = [];
  try {
    for (const [i, question] of questions.entries()) {
      if (i > 0) process.stdout.write(`\nFollow-up: ${question}\n`);
      const request = { ...buildRequest({ ...args, question }), history: [...history], conversation_id: conversationId };
      const final = await askOnce(client, args, request);
      if (!final) break;
      history.push({ role: "TURN_ROLE_USER", content: question });
      if (final.answer.trim()) history.push({ role: "TURN_ROLE_ASSISTANT", content: final.answer });
      else history.pop(); // an empty answer is no turn; nor is its question
    }
  } catch (error) {
    process.exitCode = error.code === grpc.status.CANCELLED ? 130 : 1;
  } finally {
    client.close();
  }
}

main();
