"""The tutorial's sharded customer ETL, on the official Render SDK
(`render` on PyPI), runnable under weft or `render workflows dev`.

    python generate_data.py          # sample_data/: four CSV sources, 1,000 customers
    weft dev -- python main.py       # the local server
    python client.py                 # in another terminal

`merge_customer_data` fans out one `process_shard` per shard and aggregates
their counts. As in the tutorial, every shard reads all four files in full
and keeps its own customers (`get_shard_id`, MD5); unlike the tutorial, a
shard writes its profiles to `OUT_DIR/profiles/shard-NNNNN.csv` and returns
only counts, so results stay small at any scale. Rows are validated by the
data contract of weft's customer ETL, so the profile count and the
per-shard counts equal those of weft's Rust pipeline (`customer-etl run`);
a profile here has only a few of the contract's columns.

Environment: DATA_DIR (default `sample_data`), OUT_DIR (default
`out-python`), NUM_SHARDS (default 10); the tasks' arguments override them.
"""

import asyncio
import csv
import datetime
import hashlib
import os
import re

from render.workflows import Retry, Workflows

app = Workflows()

SOURCES = {
    "crm": ["customer_id", "name", "email", "company", "country", "segment", "signup_date"],
    "billing": ["invoice_id", "customer_id", "issued_at", "amount", "status", "paid_at"],
    "product": ["event_id", "customer_id", "occurred_at", "feature", "duration_s"],
    "support": ["ticket_id", "customer_id", "opened_at", "closed_at", "priority", "csat"],
}
RECORD_KEY = {"crm": "customer_id", "billing": "invoice_id", "product": "event_id", "support": "ticket_id"}
ENUMS = {
    "segment": {"smb", "mid_market", "enterprise"},
    "status": {"paid", "open", "overdue", "refunded"},
    "priority": {"low", "normal", "high", "urgent"},
}
WHITESPACE = " \t\n\r\x0c"
CUSTOMER_ID = re.compile(r"cust_[0-9]{8}")
AMOUNT = re.compile(r"[0-9]{1,15}(\.[0-9]{1,2})?")
TIMESTAMP = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


def settings(data_dir=None, out_dir=None, num_shards=None):
    return (
        data_dir or os.getenv("DATA_DIR", "sample_data"),
        out_dir or os.getenv("OUT_DIR", "out-python"),
        int(num_shards or os.getenv("NUM_SHARDS", "10")),
    )


def get_shard_id(customer_id: str, num_shards: int) -> int:
    hash_bytes = hashlib.md5(customer_id.encode()).digest()
    return int.from_bytes(hash_bytes[:4], "big") % num_shards


def parse_date(text):
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return None
    try:
        return datetime.date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return None


def parse_timestamp(text):
    """Seconds since the epoch (UTC), fractions truncated; None if invalid."""
    m = TIMESTAMP.fullmatch(text)
    day = parse_date(m.group(1)) if m else None
    if day is None:
        return None
    h, mi, s = int(m.group(2)), int(m.group(3)), int(m.group(4))
    if h > 23 or mi > 59 or s > 59:
        return None
    offset = 0
    if m.group(5):
        oh, om = int(m.group(6)), int(m.group(7))
        if oh > 23 or om > 59:
            return None
        offset = (oh * 3600 + om * 60) * (1 if m.group(5) == "+" else -1)
    return (day - datetime.date(1970, 1, 1)).days * 86400 + h * 3600 + mi * 60 + s - offset


def is_valid(source, row):
    """The contract's row rules; whether a row is accepted (duplicates aside)."""
    required = {
        "crm": ["customer_id", "segment", "signup_date"],
        "billing": ["invoice_id", "customer_id", "issued_at", "amount", "status"],
        "product": ["event_id", "customer_id", "occurred_at", "feature", "duration_s"],
        "support": ["ticket_id", "customer_id", "opened_at", "priority"],
    }[source]
    if any(row[name] == "" for name in required) or not CUSTOMER_ID.fullmatch(row["customer_id"]):
        return False
    if source == "crm":
        return row["segment"] in ENUMS["segment"] and parse_date(row["signup_date"]) is not None
    if source == "billing":
        issued = parse_date(row["issued_at"])
        if issued is None or not AMOUNT.fullmatch(row["amount"]) or row["status"] not in ENUMS["status"]:
            return False
        if row["paid_at"] == "":
            return row["status"] != "paid"
        paid = parse_date(row["paid_at"])
        return paid is not None and paid >= issued
    if source == "product":
        return parse_timestamp(row["occurred_at"]) is not None and row["duration_s"].isascii() and row["duration_s"].isdigit()
    opened = parse_timestamp(row["opened_at"])
    closed = parse_timestamp(row["closed_at"]) if row["closed_at"] else None
    if opened is None or (row["closed_at"] and closed is None) or row["priority"] not in ENUMS["priority"]:
        return False
    csat = row["csat"]
    if csat and not (csat.isascii() and csat.isdigit() and 1 <= int(csat) <= 5):
        return False
    return closed is None or closed >= opened


def load_csv(data_dir, source):
    """The accepted rows of one file, as dicts of trimmed fields, in file order."""
    path = os.path.join(data_dir, f"{source}.csv")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r]
    header = [name.strip(WHITESPACE) for name in rows[0]]
    positions = {column: header.index(column) for column in SOURCES[source]}
    accepted = []
    for fields in rows[1:]:
        if len(fields) != len(header):
            continue
        row = {column: fields[i].strip(WHITESPACE) for column, i in positions.items()}
        if is_valid(source, row):
            accepted.append(row)
    return accepted


def filter_records_for_shard(records, shard_id, num_shards):
    return [r for r in records if get_shard_id(r["customer_id"], num_shards) == shard_id]


def merge_and_enrich(shard):
    """One profile per customer: the contract's first columns and counts."""
    profiles = {}
    for source, records in shard.items():
        seen = set()
        for r in records:
            key = (r["customer_id"], r[RECORD_KEY[source]])
            if key in seen:
                continue  # a duplicate: the first row in file order wins
            seen.add(key)
            p = profiles.setdefault(r["customer_id"], {"in_crm": False, "counts": {s: 0 for s in SOURCES}})
            p["counts"][source] += 1
            if source == "crm":
                p["in_crm"] = True
    return [
        {
            "customer_id": cid,
            "in_crm": "true" if p["in_crm"] else "false",
            "invoice_count": p["counts"]["billing"],
            "event_count": p["counts"]["product"],
            "ticket_count": p["counts"]["support"],
            "sources": "|".join(s for s in SOURCES if p["counts"][s]),
        }
        for cid, p in sorted(profiles.items())
    ]


def write_profiles(out_dir, shard_id, profiles):
    """Writes the shard's file under a temporary name and renames it, so a retry replaces it."""
    directory = os.path.join(out_dir, "profiles")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"shard-{shard_id:05d}.csv")
    tmp = os.path.join(directory, f".shard-{shard_id:05d}.csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["customer_id", "in_crm", "invoice_count", "event_count", "ticket_count", "sources"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(profiles)
    os.replace(tmp, path)


@app.task(retry=Retry(max_retries=2, wait_duration_ms=500))
def process_shard(ctx, shard_id: int, data_dir: str = None, out_dir: str = None, num_shards: int = None) -> dict:
    data_dir, out_dir, num_shards = settings(data_dir, out_dir, num_shards)
    shard = {source: filter_records_for_shard(load_csv(data_dir, source), shard_id, num_shards) for source in SOURCES}
    profiles = merge_and_enrich(shard)
    write_profiles(out_dir, shard_id, profiles)
    return {"shard_id": shard_id, "count": len(profiles)}


def aggregate_results(shard_results, out_dir):
    return {
        "profiles_generated": sum(r["count"] for r in shard_results),
        "shards_processed": len(shard_results),
        "out_dir": os.path.abspath(out_dir),
        "per_shard": [{"shard_id": r["shard_id"], "profiles": r["count"]} for r in shard_results],
    }


@app.task
async def merge_customer_data(ctx, data_dir: str = None, out_dir: str = None, num_shards: int = None) -> dict:
    data_dir, out_dir, num_shards = settings(data_dir, out_dir, num_shards)
    data_dir, out_dir = os.path.abspath(data_dir), os.path.abspath(out_dir)
    task_handles = [ctx.run(process_shard, shard_id, data_dir, out_dir, num_shards) for shard_id in range(num_shards)]
    shard_results = await asyncio.gather(*task_handles)
    return aggregate_results(shard_results, out_dir)


if __name__ == "__main__":
    app.start()
