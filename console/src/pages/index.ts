import type { PageDef } from "../app";
import { Overview } from "./overview";

/**
 * The console's sections, in the order of the navigation. Each page is a component in
 * this folder taking the route's remaining parts (`#/licenses/lic_…` → ["lic_…"]).
 */
export const PAGES: PageDef[] = [{ path: "overview", title: "Overview", component: Overview }];
