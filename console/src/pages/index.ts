import type { PageDef } from "../app";
import { Licenses } from "./licenses";
import { Machines } from "./machines";
import { Overview } from "./overview";

/**
 * The console's sections, in the order of the navigation. Each page is a component in
 * this folder taking the route's remaining parts (`#/licenses/lic_…` → ["lic_…"]).
 */
export const PAGES: PageDef[] = [
  { path: "overview", title: "Overview", component: Overview },
  { path: "licenses", title: "Licenses", component: Licenses },
  { path: "machines", title: "Machines", component: Machines },
];
