/**
 * The exact texts licensd signs with Ed25519 for the audit log. Verifiers rebuild them
 * from the fields they were given and never trust a text sent alongside.
 */
export function checkpointText(tenantId: string, treeSize: number, rootHash: Uint8Array, signTime: Date): string {
  const root = Buffer.from(rootHash).toString("base64");
  return `licensd.dev/audit/v1\n${tenantId}\n${treeSize}\n${root}\n${signTime.getTime()}\n`;
}

export function cutText(tenantId: string, seq: number, hash: Uint8Array, cutAt: Date): string {
  return `licensd.dev/audit-cut/v1\n${tenantId}\n${seq}\n${Buffer.from(hash).toString("hex")}\n${cutAt.getTime()}\n`;
}
