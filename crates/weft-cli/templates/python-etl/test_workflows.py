"""Runs the ETL of main.py on a local weft (the `weft_dev` fixture)."""

import csv
import subprocess
import sys

from render import Render


def test_merge_customer_data(weft_dev, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    subprocess.run([sys.executable, "generate_data.py", "200", "--out", str(data)], check=True)
    run = Render().workflows.run_task(
        "merge_customer_data", {"data_dir": str(data), "out_dir": str(out), "num_shards": 4}
    )
    result = run.results[0] if isinstance(run.results, list) else run.results
    assert result["shards_processed"] == 4
    profiles = []
    for shard in range(4):
        with open(out / "profiles" / f"shard-{shard:05d}.csv", newline="") as f:
            profiles += list(csv.DictReader(f))
    assert len(profiles) == result["profiles_generated"] == 200
    assert all(p["customer_id"].startswith("cust_") for p in profiles)
