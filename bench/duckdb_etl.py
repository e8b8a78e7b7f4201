#!/usr/bin/env python3
"""Runs the customer-ETL contract in DuckDB (bench/customer_etl.sql): the
pipeline's peer in scripts/bench.sh.

    duckdb_etl.py DATA_DIR OUT_CSV [AS_OF]

Prints the wall seconds of the query (connect to file written) and the
profile count. DuckDB uses every core (its default threads) and memory.
"""

import os
import shutil
import sys
import tempfile
import time

import duckdb


def main():
    data_dir, out = sys.argv[1], sys.argv[2]
    as_of = sys.argv[3] if len(sys.argv) > 3 else "2026-10-01"
    sql = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "customer_etl.sql")).read()
    started = time.perf_counter()
    con = duckdb.connect()
    # Where DuckDB spills what does not fit in memory (10M customers do not
    # on 24 GiB): a temporary directory of its own, not the working one.
    spill = tempfile.mkdtemp(prefix="weft-bench-duckdb-")
    try:
        con.execute("SET temp_directory = ?", [spill])
        con.execute("SET VARIABLE data_dir = ?", [os.path.abspath(data_dir)])
        con.execute("SET VARIABLE as_of = ?", [as_of])
        con.execute(sql.replace("@OUT@", os.path.abspath(out).replace("'", "''")))
        profiles = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
        print(f"duckdb {duckdb.__version__}: {profiles} profiles in {time.perf_counter() - started:.2f} s")
    finally:
        con.close()
        shutil.rmtree(spill, ignore_errors=True)


if __name__ == "__main__":
    main()
