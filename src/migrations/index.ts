import { Migration20261123000000Foundation } from "./Migration20261123000000Foundation.js";
import { Migration20261123010000Audit } from "./Migration20261123010000Audit.js";
import { Migration20261123020000Licensing } from "./Migration20261123020000Licensing.js";
import { Migration20261123030000Machines } from "./Migration20261123030000Machines.js";
import { Migration20261123040000Heartbeats } from "./Migration20261123040000Heartbeats.js";
import { Migration20261123050000Usage } from "./Migration20261123050000Usage.js";
import { Migration20261123060000Anomalies } from "./Migration20261123060000Anomalies.js";
import { Migration20261123070000UsageKeys } from "./Migration20261123070000UsageKeys.js";
import { Migration20261123080000AgentTokens } from "./Migration20261123080000AgentTokens.js";
import { Migration20261123090000UsageEventsCollation } from "./Migration20261123090000UsageEventsCollation.js";
import { Migration20261123100000UsageFastPath } from "./Migration20261123100000UsageFastPath.js";
import { Migration20261123110000UsageDedupeTenantSeq } from "./Migration20261123110000UsageDedupeTenantSeq.js";
import { Migration20261206000000Webhooks } from "./Migration20261206000000Webhooks.js";
import { Migration20261123121500IdempotencySealed } from "./Migration20261123121500IdempotencySealed.js";
import { Migration20261206120000DataKeyMaterial } from "./Migration20261206120000DataKeyMaterial.js";
import { Migration20261207000000AuditPending } from "./Migration20261207000000AuditPending.js";
import { Migration20261208000000ActivationAddMachine } from "./Migration20261208000000ActivationAddMachine.js";
import { Migration20261209000000ActivationActivate } from "./Migration20261209000000ActivationActivate.js";
import { Migration20261210000000Payments } from "./Migration20261210000000Payments.js";
import { Migration20261211000000PolicyBasis } from "./Migration20261211000000PolicyBasis.js";
import { Migration20261211010000LicenseUsers } from "./Migration20261211010000LicenseUsers.js";
import { Migration20261212000000Processes } from "./Migration20261212000000Processes.js";
import { Migration20261212010000MachineScopeCores } from "./Migration20261212010000MachineScopeCores.js";
import { Migration20261212020000MachineComponents } from "./Migration20261212020000MachineComponents.js";
import { Migration20261213000000ActivationBatch } from "./Migration20261213000000ActivationBatch.js";
import { Migration20261206130000AuditCutSignatures } from "./Migration20261206130000AuditCutSignatures.js";

/**
 * Every migration, in order. Listed explicitly (not discovered from a folder) so
 * the compiled server and the TypeScript tests run the same set.
 */
export const migrationsList = [
  { name: "Migration20261123000000Foundation", class: Migration20261123000000Foundation },
  { name: "Migration20261123010000Audit", class: Migration20261123010000Audit },
  { name: "Migration20261123020000Licensing", class: Migration20261123020000Licensing },
  { name: "Migration20261123030000Machines", class: Migration20261123030000Machines },
  { name: "Migration20261123040000Heartbeats", class: Migration20261123040000Heartbeats },
  { name: "Migration20261123050000Usage", class: Migration20261123050000Usage },
  { name: "Migration20261123060000Anomalies", class: Migration20261123060000Anomalies },
  { name: "Migration20261123070000UsageKeys", class: Migration20261123070000UsageKeys },
  { name: "Migration20261123080000AgentTokens", class: Migration20261123080000AgentTokens },
  { name: "Migration20261123090000UsageEventsCollation", class: Migration20261123090000UsageEventsCollation },
  { name: "Migration20261123100000UsageFastPath", class: Migration20261123100000UsageFastPath },
  { name: "Migration20261123110000UsageDedupeTenantSeq", class: Migration20261123110000UsageDedupeTenantSeq },
  { name: "Migration20261123121500IdempotencySealed", class: Migration20261123121500IdempotencySealed },
  { name: "Migration20261206000000Webhooks", class: Migration20261206000000Webhooks },
  { name: "Migration20261206120000DataKeyMaterial", class: Migration20261206120000DataKeyMaterial },
  { name: "Migration20261206130000AuditCutSignatures", class: Migration20261206130000AuditCutSignatures },
  { name: "Migration20261207000000AuditPending", class: Migration20261207000000AuditPending },
  { name: "Migration20261208000000ActivationAddMachine", class: Migration20261208000000ActivationAddMachine },
  { name: "Migration20261209000000ActivationActivate", class: Migration20261209000000ActivationActivate },
  { name: "Migration20261210000000Payments", class: Migration20261210000000Payments },
  { name: "Migration20261211000000PolicyBasis", class: Migration20261211000000PolicyBasis },
  { name: "Migration20261211010000LicenseUsers", class: Migration20261211010000LicenseUsers },
  { name: "Migration20261212000000Processes", class: Migration20261212000000Processes },
  { name: "Migration20261212010000MachineScopeCores", class: Migration20261212010000MachineScopeCores },
  { name: "Migration20261212020000MachineComponents", class: Migration20261212020000MachineComponents },
  { name: "Migration20261213000000ActivationBatch", class: Migration20261213000000ActivationBatch },
];
