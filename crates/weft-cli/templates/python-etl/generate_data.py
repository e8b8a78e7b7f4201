"""Writes the four sources of the customer ETL as CSV: CRM, billing,
product usage and support, for N customers (default 1,000), with a few
rows the pipeline must reject (a bad id, an unknown segment, a duplicate).

    python generate_data.py [CUSTOMERS] [--out sample_data] [--seed 7]

The same seed writes the same files.
"""

import argparse
import csv
import datetime
import os
import random

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("customers", nargs="?", type=int, default=1000)
parser.add_argument("--out", default="sample_data")
parser.add_argument("--seed", type=int, default=7)
args = parser.parse_args()
rng = random.Random(args.seed)
os.makedirs(args.out, exist_ok=True)
START = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)


def moment(days):
    return START + datetime.timedelta(days=days, seconds=rng.randrange(86400))


def write(name, header, rows):
    with open(os.path.join(args.out, f"{name}.csv"), "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print(f"{args.out}/{name}.csv: {len(rows)} rows")


ids = [f"cust_{n:08d}" for n in range(1, args.customers + 1)]
crm, billing, product, support = [], [], [], []
for i, cid in enumerate(ids):
    signup = moment(rng.randrange(300))
    segment = rng.choice(["smb", "mid_market", "enterprise"])
    crm.append([cid, f"Customer {i + 1}", f"c{i + 1}@example.com", f"Company {i % 97}", rng.choice(["DE", "FR", "US", "JP"]), segment, signup.date().isoformat()])
    for _ in range(rng.randrange(4)):
        issued = signup + datetime.timedelta(days=rng.randrange(1, 60))
        status = rng.choice(["paid", "open", "overdue", "refunded"])
        paid = (issued + datetime.timedelta(days=rng.randrange(30))).date().isoformat() if status == "paid" else ""
        billing.append([f"inv_{len(billing) + 1:09d}", cid, issued.date().isoformat(), f"{rng.randrange(10, 5000)}.{rng.randrange(100):02d}", status, paid])
    for _ in range(rng.randrange(6)):
        at = moment(rng.randrange(300, 330))
        product.append([f"evt_{len(product) + 1:09d}", cid, at.strftime("%Y-%m-%dT%H:%M:%SZ"), rng.choice(["search", "export", "share", "report"]), rng.randrange(1, 3600)])
    for _ in range(rng.randrange(3)):
        opened = moment(rng.randrange(300, 330))
        closed = opened + datetime.timedelta(hours=rng.randrange(1, 72)) if rng.random() < 0.7 else None
        support.append([f"tkt_{len(support) + 1:09d}", cid, opened.strftime("%Y-%m-%dT%H:%M:%SZ"), closed.strftime("%Y-%m-%dT%H:%M:%SZ") if closed else "", rng.choice(["low", "normal", "high", "urgent"]), rng.randrange(1, 6) if closed else ""])

# Rows the contract rejects, and a duplicate that counts once.
crm.append(["customer-1", "No id", "x@example.com", "X", "DE", "smb", "2025-02-01"])
crm.append([ids[0][:-1] + "0", "Bad segment", "y@example.com", "Y", "DE", "huge", "2025-02-01"])
if billing:
    billing.append(list(billing[0]))
write("crm", ["customer_id", "name", "email", "company", "country", "segment", "signup_date"], crm)
write("billing", ["invoice_id", "customer_id", "issued_at", "amount", "status", "paid_at"], billing)
write("product", ["event_id", "customer_id", "occurred_at", "feature", "duration_s"], product)
write("support", ["ticket_id", "customer_id", "opened_at", "closed_at", "priority", "csat"], support)
