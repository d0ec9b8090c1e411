import { create, type DescMessage, type Message } from "@bufbuild/protobuf";
import { pathToString } from "@bufbuild/protobuf/reflect";
import { createValidator } from "@bufbuild/protovalidate";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/ts/google/rpc/error_details_pb.js";
import { ERROR_DOMAIN } from "./errors.js";
import { RequestFieldRules, type FieldProblem } from "./request-fields.js";

/**
 * Enforces the protovalidate (`buf.validate`) rules of every request message, unary
 * and streamed, and the rules every field of every request shares (no NUL in strings,
 * timestamps and durations in range: request-fields.ts): a bad message is refused with
 * INVALID_ARGUMENT naming the field, an ErrorInfo (reason INVALID_ARGUMENT,
 * metadata.field) and a BadRequest listing every violation. Nothing reaches a handler
 * unvalidated.
 */
export function createValidationInterceptor(opts: { checkedByService?: ReadonlySet<string> } = {}): Interceptor {
  const check = createRequestCheck(opts);
  return (next) => async (req) => {
    if (!req.stream) {
      check(req.method.input, req.message);
      return next(req);
    }
    const input = req.message;
    const schema = req.method.input;
    return next({
      ...req,
      message: (async function* () {
        for await (const message of input) {
          check(schema, message);
          yield message;
        }
      })(),
    });
  };
}

/** The check the validation interceptor makes of each request message: throws INVALID_ARGUMENT as it describes. */
export function createRequestCheck(opts: { checkedByService?: ReadonlySet<string> } = {}) {
  const validator = createValidator();
  const fieldRules = new RequestFieldRules(opts.checkedByService);
  return (schema: DescMessage, message: Message) => {
    const ours = fieldRules.check(schema, message);
    const result = validator.validate(schema, message);
    if (result.kind === "error") throw result.error;
    if (result.kind === "invalid") {
      throw invalidRequest([
        ...ours,
        ...result.violations.map((v) => ({ field: pathToString(v.field), message: v.message, rule: v.ruleId })),
      ]);
    }
    if (ours.length > 0) throw invalidRequest(ours);
  };
}

/**
 * How much of a bad request the answer repeats: paths may hold map keys of any length, and the answer travels in
 * headers.
 */
const MAX_VIOLATIONS = 20;
const MAX_PATH = 160;
const MAX_MESSAGE = 2000;

/** A path cut to a readable length, its control characters (a map key may hold any) escaped. */
function boundedPath(path: string): string {
  const printable = path.replace(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this escapes
    /[\u0000-\u001f\u007f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  return printable.length <= MAX_PATH ? printable : `${printable.slice(0, MAX_PATH - 41)}…${printable.slice(-40)}`;
}

export function invalidRequest(all: readonly FieldProblem[]): ConnectError {
  const problems = all.slice(0, MAX_VIOLATIONS).map((p) => ({ ...p, field: boundedPath(p.field) }));
  const first = problems[0];
  let message = problems.map((f) => `${f.field}: ${f.message}`).join("; ");
  if (all.length > problems.length) message += `; and ${all.length - problems.length} more`;
  if (message.length > MAX_MESSAGE) message = `${message.slice(0, MAX_MESSAGE - 1)}…`;
  return new ConnectError(message, Code.InvalidArgument, undefined, [
    {
      desc: ErrorInfoSchema,
      value: create(ErrorInfoSchema, {
        reason: "INVALID_ARGUMENT",
        domain: ERROR_DOMAIN,
        metadata: { field: first.field, rule: first.rule },
      }),
    },
    {
      desc: BadRequestSchema,
      value: create(BadRequestSchema, {
        fieldViolations: problems.map((f) => ({ field: f.field, description: f.message, reason: f.rule })),
      }),
    },
  ]);
}
