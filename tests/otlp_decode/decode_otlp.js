#!/usr/bin/env node
// Decodes an OTLP trace export body (ExportTraceServiceRequest) with the OpenTelemetry project's
// own message code and prints a canonical JSON description of what it carries, so a test can
// compare it with what 0xgen recorded.
//
//   node decode_otlp.js protobuf BODY_FILE
//   node decode_otlp.js json BODY_FILE
//
// The decoder is the npm package @opentelemetry/otlp-transformer (pinned in package-lock.json):
// its build/src/generated/root.js is protobufjs static code that the OpenTelemetry JS project
// generates from the upstream opentelemetry-proto files and that its own OTLP protobuf exporter
// encodes with. Nothing here uses 0xgen's .proto files or generated C++.
//
// Exit status 0 with the description on stdout, or 1 with the reason on stderr when the body is
// not a valid ExportTraceServiceRequest (or, for JSON, not in the OTLP/JSON form).
'use strict';

const fs = require('fs');
const path = require('path');
const util = require('util');

function fail(message) {
  process.stderr.write(`decode_otlp: ${message}\n`);
  process.exit(1);
}

// ---- the independent decoder -----------------------------------------------------------------

const transformerDir = path.dirname(require.resolve('@opentelemetry/otlp-transformer/package.json'));
const transformerVersion = require('@opentelemetry/otlp-transformer/package.json').version;
const root = require(path.join(transformerDir, 'build', 'src', 'generated', 'root.js'));
// protobufjs as the package itself resolves it (the runtime its generated code runs on).
const protobuf = require(require.resolve('protobufjs/minimal', { paths: [transformerDir] }));
if (!protobuf.util.Long) {
  // Without Long, protobufjs reads 64-bit fields as JS numbers and rounds above 2^53.
  fail('protobufjs has no Long support; 64-bit values would not be exact');
}
const Long = protobuf.util.Long;

const otlp = root.opentelemetry.proto;
const Request = otlp.collector.trace.v1.ExportTraceServiceRequest;
const SpanKind = otlp.trace.v1.Span.SpanKind;
const StatusCode = otlp.trace.v1.Status.StatusCode;
const SpanFlags = otlp.trace.v1.SpanFlags;

// ---- protobuf ----------------------------------------------------------------------------------

function decodeProtobuf(bytes) {
  let message;
  try {
    message = Request.decode(bytes);
  } catch (e) {
    fail(`not a valid ExportTraceServiceRequest: ${e.message}`);
  }
  const problem = Request.verify(message);
  if (problem) fail(`decoded message does not verify: ${problem}`);
  // protobufjs skips fields its schema does not know. Re-encoding what it understood must give
  // back as many bytes as it read, so no field of the body went unaccounted for (field order may
  // differ, sizes may not: every field here has one canonical length).
  const again = Request.encode(message).finish();
  if (again.length !== bytes.length) {
    fail(`body has ${bytes.length} bytes but only ${again.length} belong to fields of the ` +
         'OTLP schema (unknown field numbers or wire types?)');
  }
  return message;
}

// ---- OTLP/JSON -------------------------------------------------------------------------------
//
// OTLP/JSON is the protobuf JSON mapping with deviations the OTLP specification lists: trace and
// span ids are hex strings instead of base64, enums are integers only, keys are lowerCamelCase.
// The package ships no request parser for it (its JSON serializer only writes), so the body is
// taken through the package's generated fromObject/toObject, which implement the standard
// mapping for the official schema, after the one OTLP-specific step done here: hex ids become
// the base64 the standard mapping expects. That is still an independent check: field names,
// nesting, value types, oneofs and enums are all judged by the OpenTelemetry project's code. The
// re-serialization comparison below makes it strict: fromObject alone ignores unknown keys and
// coerces types.

const ID_LENGTHS = { traceId: 16, spanId: 8, parentSpanId: 8 };

function hexIdToBase64(where, key, value) {
  const bytes = ID_LENGTHS[key];
  if (typeof value !== 'string') fail(`${where}.${key}: expected a hex string, got ${typeof value}`);
  // OTLP/JSON readers accept either case; 0xgen's contract says lower case, so demand it.
  if (!new RegExp(`^[0-9a-f]{${bytes * 2}}$`).test(value)) {
    fail(`${where}.${key}: expected ${bytes * 2} lower-case hex digits, got ${JSON.stringify(value)}`);
  }
  return Buffer.from(value, 'hex').toString('base64');
}

// Rewrites the id fields of spans and links (the only OTLP trace fields with hex ids).
function idsToBase64(request) {
  const out = structuredClone(request);
  (out.resourceSpans || []).forEach((rs, i) => {
    (rs.scopeSpans || []).forEach((ss, j) => {
      (ss.spans || []).forEach((span, k) => {
        const where = `resourceSpans[${i}].scopeSpans[${j}].spans[${k}]`;
        for (const key of Object.keys(ID_LENGTHS)) {
          if (key in span) span[key] = hexIdToBase64(where, key, span[key]);
        }
        (span.links || []).forEach((link, l) => {
          for (const key of ['traceId', 'spanId']) {
            if (key in link) link[key] = hexIdToBase64(`${where}.links[${l}]`, key, link[key]);
          }
        });
      });
    });
  });
  return out;
}

// `actual` is the package's rendering of what it parsed. Every key of the body must come back
// with the same value and JSON type; keys only in `actual` may only be empty repeated fields.
function compareCanonical(body, actual, where) {
  if (Array.isArray(body)) {
    if (!Array.isArray(actual) || actual.length !== body.length) {
      fail(`${where}: array not read back as sent`);
    }
    body.forEach((v, i) => compareCanonical(v, actual[i], `${where}[${i}]`));
    return;
  }
  if (body !== null && typeof body === 'object') {
    if (actual === null || typeof actual !== 'object' || Array.isArray(actual)) {
      fail(`${where}: expected an object`);
    }
    for (const key of Object.keys(body)) {
      if (!(key in actual)) {
        fail(`${where}.${key}: not a field of the OTLP schema (or not in lowerCamelCase)`);
      }
      compareCanonical(body[key], actual[key], `${where}.${key}`);
    }
    for (const key of Object.keys(actual)) {
      if (!(key in body) && !(Array.isArray(actual[key]) && actual[key].length === 0)) {
        fail(`${where}.${key}: read back a value the body does not have`);
      }
    }
    return;
  }
  if (typeof body !== typeof actual || body !== actual) {
    const hint = typeof actual === 'string' && typeof body === 'number'
      ? ' (64-bit integers are decimal strings in OTLP/JSON)'
      : typeof body === 'string' && typeof actual === 'number'
        ? ' (enums, 32-bit integers and doubles are JSON numbers in OTLP/JSON)'
        : '';
    fail(`${where}: sent ${JSON.stringify(body)}, the OTLP schema reads ` +
         `${JSON.stringify(actual)}${hint}`);
  }
}

function decodeJson(bytes) {
  let text;
  try {
    text = new util.TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (e) {
    fail('body is not valid UTF-8');
  }
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    fail(`body is not JSON: ${e.message}`);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    fail('body is not a JSON object');
  }
  const standard = idsToBase64(body);
  let message;
  try {
    message = Request.fromObject(standard);
  } catch (e) {
    fail(`not an ExportTraceServiceRequest: ${e.message}`);
  }
  const problem = Request.verify(message);
  if (problem) fail(`parsed message does not verify: ${problem}`);
  const readBack = Request.toObject(message, {
    longs: String, enums: Number, bytes: String, arrays: true, json: true,
  });
  compareCanonical(standard, readBack, '$');
  return message;
}

// ---- canonical description -------------------------------------------------------------------

function hex(bytes) {
  return bytes ? Buffer.from(bytes).toString('hex') : '';
}

function u64(value) {
  if (value === null || value === undefined) return '0';
  if (typeof value === 'number') return String(value);
  return Long.fromValue(value).toUnsigned().toString();
}

function describeValue(v) {
  switch (v.value) {
    case 'stringValue': return { type: 'string', value: v.stringValue };
    case 'boolValue': return { type: 'bool', value: v.boolValue };
    case 'intValue': return { type: 'int', value: Long.fromValue(v.intValue).toString() };
    case 'doubleValue': return { type: 'double', value: v.doubleValue };
    case 'bytesValue': return { type: 'bytes', value: hex(v.bytesValue) };
    case 'arrayValue': return { type: 'array', value: v.arrayValue.values.map(describeValue) };
    case 'kvlistValue': return { type: 'kvlist', value: describeAttributes(v.kvlistValue.values) };
    default: return { type: 'empty', value: null };
  }
}

function describeAttributes(list) {
  return (list || []).map((kv) => ({ key: kv.key, ...describeValue(kv.value || {}) }));
}

function checkId(what, bytes, length, optional) {
  const n = bytes ? bytes.length : 0;
  if (!(n === length || (optional && n === 0))) fail(`${what} has ${n} bytes, not ${length}`);
}

function describeSpan(span) {
  checkId('trace_id', span.traceId, 16, false);
  checkId('span_id', span.spanId, 8, false);
  checkId('parent_span_id', span.parentSpanId, 8, true);
  const kind = span.kind || 0;
  const status = span.status || {};
  const code = status.code || 0;
  const flags = span.flags || 0;
  return {
    traceId: hex(span.traceId),
    spanId: hex(span.spanId),
    parentSpanId: hex(span.parentSpanId),
    traceState: span.traceState || '',
    name: span.name || '',
    kind,
    kindName: SpanKind[kind] || null,
    startTimeUnixNano: u64(span.startTimeUnixNano),
    endTimeUnixNano: u64(span.endTimeUnixNano),
    flags,
    traceFlags: flags & SpanFlags.SPAN_FLAGS_TRACE_FLAGS_MASK,
    attributes: describeAttributes(span.attributes),
    droppedAttributesCount: span.droppedAttributesCount || 0,
    events: (span.events || []).map((e) => ({
      name: e.name || '',
      timeUnixNano: u64(e.timeUnixNano),
      attributes: describeAttributes(e.attributes),
    })),
    links: (span.links || []).length,
    status: { code, codeName: StatusCode[code] || null, message: status.message || '' },
  };
}

function describe(message) {
  return {
    decoder: `@opentelemetry/otlp-transformer@${transformerVersion}`,
    resourceSpans: (message.resourceSpans || []).map((rs) => ({
      resource: { attributes: describeAttributes(rs.resource ? rs.resource.attributes : []) },
      scopeSpans: (rs.scopeSpans || []).map((ss) => ({
        scope: {
          name: (ss.scope && ss.scope.name) || '',
          version: (ss.scope && ss.scope.version) || '',
        },
        spans: (ss.spans || []).map(describeSpan),
      })),
    })),
  };
}

// ---- main --------------------------------------------------------------------------------------

function main(argv) {
  if (argv.length !== 2 || !['protobuf', 'json'].includes(argv[0])) {
    fail('usage: decode_otlp.js protobuf|json BODY_FILE');
  }
  let bytes;
  try {
    bytes = fs.readFileSync(argv[1]);
  } catch (e) {
    fail(`cannot read ${argv[1]}: ${e.message}`);
  }
  const message = argv[0] === 'protobuf' ? decodeProtobuf(bytes) : decodeJson(bytes);
  process.stdout.write(`${JSON.stringify(describe(message), null, 1)}\n`);
}

main(process.argv.slice(2));
