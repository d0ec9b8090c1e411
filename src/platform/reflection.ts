import { create, createRegistry, toBinary, type DescFile, type DescService, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as v1 from "../../gen/ts/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/ts/grpc/reflection/v1alpha/reflection_pb.js";

/*
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) for Connect. Written here
 * because connect-es ships no reflection service and @grpc/reflection serves only
 * @grpc/grpc-js servers; the answers come from the same descriptors the router serves.
 */

const NOT_FOUND = 5;

type Request = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

/** The plain answer to one reflection request, shared by both protocol versions. */
type Answer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

export class ReflectionIndex {
  private readonly registry: Registry;
  private readonly files = new Map<string, DescFile>();
  private readonly serviceNames: string[];

  /**
   * `services` and the files they import, and `extraFiles`: files clients need that no service imports (error details).
   */
  constructor(services: DescService[], extraFiles: DescFile[] = []) {
    const visit = (file: DescFile) => {
      if (this.files.has(file.name)) return;
      file.dependencies.forEach(visit);
      this.files.set(file.name, file);
    };
    for (const s of services) visit(s.file);
    for (const f of extraFiles) visit(f);
    this.registry = createRegistry(...this.files.values());
    this.serviceNames = services.map((s) => s.typeName).sort();
  }

  answer(req: Request): Answer {
    const r = req.messageRequest;
    switch (r.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: this.serviceNames.map((name) => ({ name })) } };
      case "fileByFilename": {
        const file = this.files.get(r.value);
        return file ? this.withImports(file) : notFound(`file ${r.value}`);
      }
      case "fileContainingSymbol": {
        const file = this.fileOfSymbol(r.value);
        return file ? this.withImports(file) : notFound(`symbol ${r.value}`);
      }
      case "fileContainingExtension": {
        const extendee = this.registry.getMessage(r.value.containingType);
        const ext = extendee && this.registry.getExtensionFor(extendee, r.value.extensionNumber);
        return ext
          ? this.withImports(ext.file)
          : notFound(`extension ${r.value.containingType}(${r.value.extensionNumber})`);
      }
      case "allExtensionNumbersOfType": {
        const message = this.registry.getMessage(r.value);
        if (!message) return notFound(`type ${r.value}`);
        const numbers: number[] = [];
        for (const desc of this.registry) {
          if (desc.kind === "extension" && desc.extendee.typeName === message.typeName) numbers.push(desc.number);
        }
        return {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: message.typeName, extensionNumber: numbers.sort((a, b) => a - b) },
        };
      }
      default:
        return { case: "errorResponse", value: { errorCode: 3, errorMessage: "unsupported reflection request" } };
    }
  }

  private fileOfSymbol(symbol: string): DescFile | undefined {
    // A type or service by name; else a member (`pkg.Service.Method`, `pkg.Type.field`).
    const desc = this.registry.get(symbol) ?? this.registry.get(symbol.slice(0, symbol.lastIndexOf(".")));
    return desc?.file;
  }

  /** The file and everything it imports, as grpcurl and buf curl expect. */
  private withImports(file: DescFile): Answer {
    const out: Uint8Array[] = [];
    const seen = new Set<string>();
    const visit = (f: DescFile) => {
      if (seen.has(f.name)) return;
      seen.add(f.name);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
      f.dependencies.forEach(visit);
    };
    visit(file);
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
  }
}

const notFound = (what: string): Answer => ({
  case: "errorResponse",
  value: { errorCode: NOT_FOUND, errorMessage: `${what} not found` },
});

export function createReflectionV1(index: ReflectionIndex): ServiceImpl<typeof v1.ServerReflection> {
  return {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(v1.ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse: index.answer(req),
        });
      }
    },
  };
}

export function createReflectionV1alpha(index: ReflectionIndex): ServiceImpl<typeof v1alpha.ServerReflection> {
  return {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(v1alpha.ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse: index.answer(req),
        });
      }
    },
  };
}
