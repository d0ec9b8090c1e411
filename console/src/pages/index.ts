import type { PageDef } from "../app";
import { Anomalies } from "./anomalies";
import { Customers } from "./customers";
import { Overview } from "./overview";
import { Policies } from "./policies";
import { Products } from "./products";
import { Usage } from "./usage";

/**
 * The console's sections, in the order of the navigation. Each page is a component in
 * this folder taking the route's remaining parts (`#/licenses/lic_…` → ["lic_…"]).
 */
export const PAGES: PageDef[] = [
  { path: "overview", title: "Overview", component: Overview },
  { path: "products", title: "Products", component: Products },
  { path: "policies", title: "Policies", component: Policies },
  { path: "customers", title: "Customers", component: Customers },
  { path: "usage", title: "Usage", component: Usage },
  { path: "anomalies", title: "Anomalies", component: Anomalies },
];
