import type { PageDef } from "../app";
import { ApiKeys } from "./api-keys";
import { Audit } from "./audit";
import { Overview } from "./overview";
import { Tenants } from "./tenants";
import { Webhooks } from "./webhooks";

/**
 * The console's sections, in the order of the navigation. Each page is a component in
 * this folder taking the route's remaining parts (`#/licenses/lic_…` → ["lic_…"]).
 */
export const PAGES: PageDef[] = [
  { path: "overview", title: "Overview", component: Overview },
  { path: "audit", title: "Audit", component: Audit },
  { path: "webhooks", title: "Webhooks", component: Webhooks },
  { path: "api-keys", title: "API keys", component: ApiKeys },
  { path: "tenants", title: "Tenants", component: Tenants, superAdminOnly: true, noTenant: true },
];
