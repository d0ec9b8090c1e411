import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { ActivationService, GetSigningKeysResponseSchema } from "../../gen/ts/licensd/activation/v1/activation_service_pb.js";
import { SigningKeyStatus } from "../../gen/ts/licensd/activation/v1/signing_key_pb.js";
import type { SigningKeyStore } from "../platform/signing-keys.js";

/** The Connect implementation of licensd.activation.v1.ActivationService (signing keys so far). */
export function createActivationRpc({ signingKeys }: { signingKeys: SigningKeyStore }): ServiceImpl<typeof ActivationService> {
  return {
    getSigningKeys() {
      return create(GetSigningKeysResponseSchema, {
        keys: signingKeys.publicKeys().map((k) => ({
          kid: k.kid,
          algorithm: k.algorithm,
          publicKey: k.publicKey,
          status: k.status === "active" ? SigningKeyStatus.ACTIVE : SigningKeyStatus.RETIRING,
          notBefore: timestampFromDate(k.notBefore),
          notAfter: k.notAfter ? timestampFromDate(k.notAfter) : undefined,
        })),
      });
    },
  };
}
