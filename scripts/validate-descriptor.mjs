// Writes buf/validate/validate.proto (and its imports) as a FileDescriptorSet, taken from
// the descriptor @bufbuild/protovalidate ships: the BSR is out of reach, and third-party
// .proto files are not copied into the repo.
import { writeFileSync } from "node:fs";
import { create, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { file_buf_validate_validate } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

const seen = new Map();
const visit = (file) => {
  if (seen.has(file.name)) return;
  for (const dep of file.dependencies) visit(dep);
  seen.set(file.name, file.proto);
};
visit(file_buf_validate_validate);
const set = create(FileDescriptorSetSchema, { file: [...seen.values()] });
writeFileSync(process.argv[2], toBinary(FileDescriptorSetSchema, set));
