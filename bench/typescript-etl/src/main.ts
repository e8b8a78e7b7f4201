// The tutorial's sharded customer ETL in TypeScript (@renderinc/sdk 1.x),
// for timing how a TypeScript app starts under weft.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type TaskContext, task } from "@renderinc/sdk/workflows";

const NUM_SHARDS = 10;
const DATA_DIR = process.env.DATA_DIR ?? "sample_data";

function getShardId(customerId: string): number {
  return createHash("md5").update(customerId).digest().readUInt32BE(0) % NUM_SHARDS;
}

function loadCsv(name: string): Record<string, string>[] {
  const [header, ...lines] = readFileSync(join(DATA_DIR, name), "utf8").trim().split("\n");
  const columns = header.split(",");
  return lines.map((line) => {
    const fields = line.split(",");
    return Object.fromEntries(columns.map((c, i) => [c, fields[i] ?? ""]));
  });
}

type ShardResult = { shard_id: number; count: number };

const processShard = task(
  { name: "process_shard" },
  function processShard(_ctx: TaskContext, shardId: number): ShardResult {
    const profiles = new Map<string, Record<string, number>>();
    for (const source of ["crm", "billing", "product", "support"]) {
      for (const row of loadCsv(`${source}.csv`)) {
        const id = row.customer_id;
        if (!/^cust_[0-9]{8}$/.test(id) || getShardId(id) !== shardId) continue;
        const p = profiles.get(id) ?? {};
        p[source] = (p[source] ?? 0) + 1;
        profiles.set(id, p);
      }
    }
    return { shard_id: shardId, count: profiles.size };
  },
);

task(
  { name: "merge_customer_data" },
  async function mergeCustomerData(ctx: TaskContext): Promise<object> {
    const results = await Promise.all(
      Array.from({ length: NUM_SHARDS }, (_, shardId) => ctx.run(processShard, shardId)),
    );
    return {
      profiles_generated: results.reduce((n, r) => n + r.count, 0),
      shards_processed: results.length,
    };
  },
);
