import { Migration } from "@mikro-orm/migrations";

/**
 * Per-agent token allowances: a meter may count agent tokens, and the period totals get
 * one row per agent beside the metric's own (agent_id '' is the metric as a whole).
 */
export class Migration20261123080000AgentTokens extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table meters add column agent_tokens boolean not null default false`);
    this.addSql(`alter table usage_periods add column agent_id text collate "C" not null default ''`);
    this.addSql(`alter table usage_periods drop constraint usage_periods_pkey`);
    this.addSql(`alter table usage_periods add primary key (license_id, meter_id, period_start, agent_id)`);
  }

  override async down(): Promise<void> {
    this.addSql(`delete from usage_periods where agent_id <> ''`);
    this.addSql(`alter table usage_periods drop constraint usage_periods_pkey`);
    this.addSql(`alter table usage_periods add primary key (license_id, meter_id, period_start)`);
    this.addSql(`alter table usage_periods drop column agent_id`);
    this.addSql(`alter table meters drop column agent_tokens`);
  }
}
