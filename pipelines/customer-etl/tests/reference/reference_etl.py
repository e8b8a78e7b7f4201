#!/usr/bin/env python3
"""Independent reference implementation of the customer ETL data contract.

Written from shared/spec/customer-etl.md and the decisions in the crate's
README (not from the Rust code), stdlib only, deliberately simple and slow.
It reads the four files with Python's csv module, so it also cross-checks the
Rust record scanner.

    reference_etl.py DATA_DIR OUT_DIR NUM_SHARDS [AS_OF]

writes OUT_DIR/profiles/shard-NNNNN.csv, OUT_DIR/rejects/shard-NNNNN.csv and
OUT_DIR/rejects/unroutable.csv, as the Rust pipeline does.
"""

import csv
import datetime
import hashlib
import os
import re
import sys

SOURCES = ["crm", "billing", "product", "support"]
COLUMNS = {
    "crm": ["customer_id", "name", "email", "company", "country", "segment", "signup_date"],
    "billing": ["invoice_id", "customer_id", "issued_at", "amount", "status", "paid_at"],
    "product": ["event_id", "customer_id", "occurred_at", "feature", "duration_s"],
    "support": ["ticket_id", "customer_id", "opened_at", "closed_at", "priority", "csat"],
}
KEY = {"crm": None, "billing": "invoice_id", "product": "event_id", "support": "ticket_id"}
SEGMENTS = {"smb", "mid_market", "enterprise"}
STATUSES = {"paid", "open", "overdue", "refunded"}
PRIORITIES = {"low", "normal", "high", "urgent"}
PROFILE_COLUMNS = (
    "customer_id,name,email,company,country,segment,signup_date,in_crm,invoice_count,"
    "paid_invoice_count,lifetime_value,outstanding_balance,overdue_invoice_count,"
    "last_payment_at,event_count,events_30d,active_days_30d,top_feature,last_seen_at,"
    "ticket_count,open_ticket_count,avg_csat,avg_resolution_hours,health_score,tier,sources"
)
EPOCH = datetime.date(1970, 1, 1)
WS = " \t\n\r\x0c"


class Reject(Exception):
    def __init__(self, reason):
        self.reason = reason


def parse_date(text):
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return None
    try:
        return datetime.date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return None


TS = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_timestamp(text):
    """Seconds since the epoch, UTC, fraction truncated."""
    m = TS.fullmatch(text)
    if not m:
        return None
    day = parse_date(m.group(1))
    h, mi, s = int(m.group(2)), int(m.group(3)), int(m.group(4))
    if day is None or h > 23 or mi > 59 or s > 59:
        return None
    offset = 0
    if not m.group(5):
        oh, om = int(m.group(7)), int(m.group(8))
        if oh > 23 or om > 59:
            return None
        offset = (oh * 3600 + om * 60) * (1 if m.group(6) == "+" else -1)
    return (day - EPOCH).days * 86400 + h * 3600 + mi * 60 + s - offset


def fmt_timestamp(seconds):
    return (datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def check(row, source):
    """Validates a row (dict of trimmed required fields); returns the typed record or raises Reject."""
    def required(name):
        if row[name] == "":
            raise Reject("missing_field")
        return row[name]

    def customer():
        if not re.fullmatch(r"cust_[0-9]{8}", required("customer_id")):
            raise Reject("bad_customer_id")
        return row["customer_id"]

    def date(name, value):
        d = parse_date(value)
        if d is None:
            raise Reject("bad_date")
        return d

    def timestamp(value):
        t = parse_timestamp(value)
        if t is None:
            raise Reject("bad_timestamp")
        return t

    def enum(value, allowed):
        if value not in allowed:
            raise Reject("bad_enum")
        return value

    rec = {}
    if source == "crm":
        rec["customer_id"] = customer()
        rec["name"], rec["company"], rec["country"] = row["name"], row["company"], row["country"]
        rec["email"] = row["email"].translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))
        rec["segment"] = enum(required("segment"), SEGMENTS)
        rec["signup_date"] = date("signup_date", required("signup_date"))
    elif source == "billing":
        rec["key"] = required("invoice_id")
        rec["customer_id"] = customer()
        issued = date("issued_at", required("issued_at"))
        m = re.fullmatch(r"([0-9]{1,15})(?:\.([0-9]{1,2}))?", required("amount"))
        if not m:
            raise Reject("bad_amount")
        rec["cents"] = int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
        rec["status"] = enum(required("status"), STATUSES)
        rec["paid_at"] = None
        if row["paid_at"] == "":
            if rec["status"] == "paid":
                raise Reject("missing_field")
        else:
            rec["paid_at"] = date("paid_at", row["paid_at"])
        if rec["paid_at"] is not None and rec["paid_at"] < issued:
            raise Reject("paid_before_issued")
    elif source == "product":
        rec["key"] = required("event_id")
        rec["customer_id"] = customer()
        rec["occurred_at"] = timestamp(required("occurred_at"))
        rec["feature"] = required("feature")
        if not re.fullmatch(r"[0-9]+", required("duration_s")):
            raise Reject("bad_integer")
    else:
        rec["key"] = required("ticket_id")
        rec["customer_id"] = customer()
        opened = timestamp(required("opened_at"))
        closed = timestamp(row["closed_at"]) if row["closed_at"] != "" else None
        enum(required("priority"), PRIORITIES)
        rec["csat"] = None
        if row["csat"] != "":
            if not re.fullmatch(r"[0-9]+", row["csat"]) or not 1 <= int(row["csat"]) <= 5:
                raise Reject("bad_csat")
            rec["csat"] = int(row["csat"])
        if closed is not None and closed < opened:
            raise Reject("closed_before_opened")
        rec["opened_at"], rec["closed_at"] = opened, closed
    return rec


class LineFeed:
    """Feeds csv.reader physical lines (split at \\n only) and remembers what it consumed."""

    def __init__(self, text):
        self.lines = iter(re.findall(r"[^\n]*\n|[^\n]+$", text))
        self.consumed = []

    def __iter__(self):
        return self

    def __next__(self):
        line = next(self.lines)
        self.consumed.append(line)
        return line


def read_source(data_dir, source):
    """Yields (line, raw, fields-or-None-for-column_count...) as (line, raw, row_dict or None)."""
    path = os.path.join(data_dir, source + ".csv")
    if not os.path.exists(path):
        sys.exit(f"input file {path} is missing")
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    feed = LineFeed(text)
    header = None
    next_line = 1
    for fields in csv.reader(feed):
        consumed = "".join(feed.consumed)
        feed.consumed = []
        line = next_line
        next_line += consumed.count("\n")
        if fields == []:
            continue  # a blank line
        raw = consumed[:-2] if consumed.endswith("\r\n") else consumed[:-1] if consumed.endswith("\n") else consumed
        if header is None:
            header = [h.strip(WS) for h in fields]
            positions = {}
            for column in COLUMNS[source]:
                if column not in header:
                    sys.exit(f"input file {path} has no column `{column}` in its header")
                positions[column] = header.index(column)
            continue
        if len(fields) != len(header):
            yield line, raw, None
        else:
            yield line, raw, {c: fields[p].strip(WS) for c, p in positions.items()}
    if header is None:
        sys.exit(f"input file {path} has no header row")


def shard_of(customer_id, num_shards):
    return int.from_bytes(hashlib.md5(customer_id.encode("utf-8")).digest()[:4], "big") % num_shards


def csv_field(value):
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def main():
    data_dir, out_dir, num_shards = sys.argv[1], sys.argv[2], int(sys.argv[3])
    as_of = datetime.date.fromisoformat(sys.argv[4] if len(sys.argv) > 4 else "2026-10-01")
    window_end = (as_of - EPOCH).days * 86400 + 86400
    window_start = window_end - 30 * 86400

    rejects = {shard: [] for shard in range(num_shards)}
    rejects["unroutable"] = []
    accepted = {s: {} for s in SOURCES}  # source -> customer -> [records]
    for source in SOURCES:
        seen = set()
        for line, raw, row in read_source(data_dir, source):
            if row is None:
                rejects["unroutable"].append((source, line, "column_count", raw))
                continue
            cid = row["customer_id"]
            routable = re.fullmatch(r"cust_[0-9]{8}", cid) is not None
            try:
                rec = check(row, source)
                dedupe_key = (cid, rec.get("key"))
                if dedupe_key in seen:
                    raise Reject("duplicate")
                seen.add(dedupe_key)
                accepted[source].setdefault(cid, []).append(rec)
            except Reject as r:
                target = shard_of(cid, num_shards) if routable else "unroutable"
                rejects[target].append((source, line, r.reason, raw))

    customers = set()
    for source in SOURCES:
        customers.update(accepted[source])
    shards = {shard: [] for shard in range(num_shards)}
    for cid in sorted(customers):
        crm = accepted["crm"].get(cid, [None])[0]
        invoices = accepted["billing"].get(cid, [])
        events = accepted["product"].get(cid, [])
        tickets = accepted["support"].get(cid, [])
        paid = [i for i in invoices if i["status"] == "paid"]
        overdue = sum(1 for i in invoices if i["status"] == "overdue")
        in_window = [e["occurred_at"] for e in events if window_start <= e["occurred_at"] < window_end]
        active_days = len({t // 86400 for t in in_window})
        counts = {}
        for e in events:
            counts[e["feature"]] = counts.get(e["feature"], 0) + 1
        top = min(counts, key=lambda f: (-counts[f], f.encode("utf-8"))) if counts else ""
        csats = [t["csat"] for t in tickets if t["csat"] is not None]
        closed = [t["closed_at"] - t["opened_at"] for t in tickets if t["closed_at"] is not None]
        open_tickets = sum(1 for t in tickets if t["closed_at"] is None)
        avg_csat = ""
        if csats:
            hundredths = (200 * sum(csats) + len(csats)) // (2 * len(csats))
            avg_csat = f"{hundredths // 100}.{hundredths % 100:02d}"
        avg_res = ""
        if closed:
            tenths = (20 * sum(closed) + 3600 * len(closed)) // (7200 * len(closed))
            avg_res = f"{tenths // 10}.{tenths % 10}"
        score = (
            2 * min(active_days, 20)
            + max(0, 30 - 10 * overdue)
            + 20 - min(5 * open_tickets, 20)
            + (5 if not csats else (10 * (sum(csats) - len(csats))) // (4 * len(csats)))
        )
        tier = "champion" if score >= 80 else "healthy" if score >= 60 else "at_risk" if score >= 40 else "churning"
        lifetime = sum(i["cents"] for i in paid)
        outstanding = sum(i["cents"] for i in invoices if i["status"] in ("open", "overdue"))
        present = [s for s in SOURCES if cid in accepted[s]]
        values = [
            cid,
            crm["name"] if crm else "",
            crm["email"] if crm else "",
            crm["company"] if crm else "",
            crm["country"] if crm else "",
            crm["segment"] if crm else "",
            crm["signup_date"].isoformat() if crm else "",
            "true" if crm else "false",
            str(len(invoices)),
            str(len(paid)),
            f"{lifetime // 100}.{lifetime % 100:02d}",
            f"{outstanding // 100}.{outstanding % 100:02d}",
            str(overdue),
            max(i["paid_at"] for i in paid).isoformat() if paid else "",
            str(len(events)),
            str(len(in_window)),
            str(active_days),
            top,
            fmt_timestamp(max(e["occurred_at"] for e in events)) if events else "",
            str(len(tickets)),
            str(open_tickets),
            avg_csat,
            avg_res,
            str(score),
            tier,
            "|".join(present),
        ]
        shards[shard_of(cid, num_shards)].append(",".join(csv_field(v) for v in values) + "\n")

    os.makedirs(os.path.join(out_dir, "profiles"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "rejects"), exist_ok=True)

    def write(path, header, lines):
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(header + "\n")
            f.writelines(lines)

    def reject_lines(rows):
        rows.sort(key=lambda r: (SOURCES.index(r[0]), r[1]))
        return [f"{s},{line},{reason},{csv_field(raw)}\n" for s, line, reason, raw in rows]

    for shard in range(num_shards):
        write(os.path.join(out_dir, "profiles", f"shard-{shard:05d}.csv"), PROFILE_COLUMNS, shards[shard])
        write(os.path.join(out_dir, "rejects", f"shard-{shard:05d}.csv"), "source,line,reason,raw", reject_lines(rejects[shard]))
    write(os.path.join(out_dir, "rejects", "unroutable.csv"), "source,line,reason,raw", reject_lines(rejects["unroutable"]))


if __name__ == "__main__":
    main()
