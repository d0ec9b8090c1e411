import type { PageDef } from "../app";
import { Anomalies } from "./anomalies";
import { ApiKeys } from "./api-keys";
import { Audit } from "./audit";
import { Customers } from "./customers";
import { Licenses } from "./licenses";
import { Machines } from "./machines";
import { Overview } from "./overview";
import { Policies } from "./policies";
import { Products } from "./products";
import { Tenants } from "./tenants";
import { Usage } from "./usage";
import { Webhooks } from "./webhooks";

/**
 * The console's sections, in the order of the navigation. Each page is a component in
 * this folder taking the route's remaining parts (`#/licenses/lic_…` → ["lic_…"]).
 */
export const PAGES: PageDef[] = [
  { path: "overview", title: "Overview", component: Overview },
  { path: "products", title: "Products", component: Products },
  { path: "policies", title: "Policies", component: Policies },
  { path: "customers", title: "Customers", component: Customers },
  { path: "licenses", title: "Licenses", component: Licenses },
  { path: "machines", title: "Machines", component: Machines },
  { path: "usage", title: "Usage", component: Usage },
  { path: "anomalies", title: "Anomalies", component: Anomalies },
  { path: "audit", title: "Audit", component: Audit },
  { path: "webhooks", title: "Webhooks", component: Webhooks },
  { path: "api-keys", title: "API keys", component: ApiKeys },
  { path: "tenants", title: "Tenants", component: Tenants, superAdminOnly: true, noTenant: true },
];
