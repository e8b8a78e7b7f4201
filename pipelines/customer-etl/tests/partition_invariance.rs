//! However the inputs are cut into chunks and customers into shards, the
//! profiles and rejects are the same.

mod common;

use customer_etl::{Format, generate};

#[test]
fn chunk_and_shard_counts_do_not_change_the_result() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 1500, 99).unwrap();
    let (base_out, base) = common::run(data.path(), 1, 1, Format::Csv);
    let mut want = common::profile_rows(base_out.path());
    want.sort();
    let want_rejects = common::reject_rows(base_out.path());
    assert_eq!(want.len() as u64, base.profiles_generated);
    for (shards, chunks) in [(1, 9), (4, 1), (5, 3), (16, 7), (64, 2)] {
        let (out, summary) = common::run(data.path(), shards, chunks, Format::Csv);
        let mut got = common::profile_rows(out.path());
        got.sort();
        assert_eq!(got, want, "{shards} shards, {chunks} chunks");
        assert_eq!(
            common::reject_rows(out.path()),
            want_rejects,
            "{shards} shards, {chunks} chunks"
        );
        assert_eq!(
            (summary.rows_read, summary.rows_rejected),
            (base.rows_read, base.rows_rejected)
        );
        assert_eq!(summary.per_shard.len(), shards as usize);
        // Each shard's file is sorted by customer_id and holds only its customers.
        for shard in 0..shards {
            let text =
                std::fs::read_to_string(out.path().join(format!("profiles/shard-{shard:05}.csv")))
                    .unwrap();
            let ids: Vec<String> = common::split_records(&text)
                .iter()
                .skip(1)
                .map(|r| r[..13].to_string())
                .collect();
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "shard {shard} is not sorted"
            );
            assert!(
                ids.iter()
                    .all(|id| customer_etl::shard_of(id, shards) == shard)
            );
        }
    }
}
