//! Routing customers to shards: `u32_be(md5(customer_id)[0..4]) % num_shards`.

use md5::{Digest, Md5};

/// The number of shards of a run that names none, for small inputs (the
/// tutorial's).
pub const DEFAULT_NUM_SHARDS: u32 = 10;

/// Input bytes per shard when a run names no shard count. A shard holds its
/// customers' rows in memory, about twice its share of the input at its
/// peak (190 MB for 86 MB of input), so with this much each shard process
/// stays near 200 MB however large the input: 10 shards at 10 M customers
/// took 1.8 GB each (BENCHMARKS.md, "Customer ETL: how the time grows").
pub const SHARD_INPUT_BYTES: u64 = 96 << 20;

/// Sets the input bytes per shard instead of [`SHARD_INPUT_BYTES`] (for a
/// machine with more or less memory per process, and for tests).
pub const SHARD_INPUT_BYTES_ENV: &str = "CUSTOMER_ETL_SHARD_INPUT_BYTES";

/// The shard count for `input_bytes` of input when a run names none:
/// [`DEFAULT_NUM_SHARDS`], or one per [`SHARD_INPUT_BYTES`] (or
/// `$CUSTOMER_ETL_SHARD_INPUT_BYTES`) when that is more.
pub fn default_num_shards(input_bytes: u64) -> u32 {
    let per_shard = std::env::var(SHARD_INPUT_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(SHARD_INPUT_BYTES);
    shards_for(input_bytes, per_shard)
}

/// [`DEFAULT_NUM_SHARDS`], or one shard per `per_shard` bytes when that is more.
pub fn shards_for(input_bytes: u64, per_shard: u64) -> u32 {
    let needed = input_bytes.div_ceil(per_shard.max(1));
    u32::try_from(needed)
        .unwrap_or(u32::MAX)
        .max(DEFAULT_NUM_SHARDS)
}

/// The shard of a (trimmed) customer id among `num_shards` shards.
///
/// # Panics
/// When `num_shards` is 0.
pub fn shard_of(customer_id: &str, num_shards: u32) -> u32 {
    let digest = Md5::digest(customer_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % num_shards
}

/// Routes customer ids to shards, remembering the shards of the ids it has
/// seen: MD5 was the partition step's costliest work after parsing, computed
/// once per row (13.6 M at 1 M customers) where once per customer will do
/// (BENCHMARKS.md, "Where the time goes").
///
/// The memory is a direct-mapped table of [`ROUTER_SLOTS`] ids (2 MiB
/// whatever the input's size): an id whose slot another id took is hashed
/// again, so the answer is always [`shard_of`]'s.
#[derive(Debug, Clone)]
pub struct ShardRouter {
    num_shards: u32,
    /// Per slot: `(number + 1) << 32 | shard`, 0 when empty.
    slots: Box<[u64]>,
}

/// Slots of a [`ShardRouter`]'s table.
pub const ROUTER_SLOTS: usize = 1 << 18;

impl ShardRouter {
    /// A router over `num_shards` (at least 1) shards.
    pub fn new(num_shards: u32) -> Self {
        assert!(num_shards > 0, "num_shards must be at least 1");
        ShardRouter {
            num_shards,
            slots: vec![0; ROUTER_SLOTS].into_boxed_slice(),
        }
    }

    /// Number of shards.
    pub fn num_shards(&self) -> u32 {
        self.num_shards
    }

    /// The shard of a valid customer id, given as its text and its 8-digit number.
    pub fn route(&mut self, customer_id: &str, number: u32) -> u32 {
        // Fibonacci hashing: neighbouring numbers land far apart.
        let slot =
            (number.wrapping_mul(0x9E37_79B9) >> (32 - ROUTER_SLOTS.trailing_zeros())) as usize;
        let tag = (u64::from(number) + 1) << 32;
        let entry = self.slots[slot];
        if entry & !0xFFFF_FFFF == tag {
            return entry as u32;
        }
        let shard = shard_of(customer_id, self.num_shards);
        self.slots[slot] = tag | u64::from(shard);
        shard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_count_grows_with_the_input_past_the_default() {
        const MIB: u64 = 1 << 20;
        assert_eq!(shards_for(0, SHARD_INPUT_BYTES), DEFAULT_NUM_SHARDS);
        // 1 M customers (861 MB): still the tutorial's ten.
        assert_eq!(shards_for(861_000_000, SHARD_INPUT_BYTES), 10);
        assert_eq!(shards_for(960 * MIB, SHARD_INPUT_BYTES), 10);
        assert_eq!(shards_for(960 * MIB + 1, SHARD_INPUT_BYTES), 11);
        // 10 M customers (8.7 GB): each shard about 96 MiB of input.
        assert_eq!(shards_for(8_700_000_000, SHARD_INPUT_BYTES), 87);
        assert_eq!(shards_for(u64::MAX, 1), u32::MAX);
        assert_eq!(shards_for(100, 0), 100, "a zero size counts as one byte");
    }

    fn ids() -> Vec<String> {
        (0..10).map(|i| format!("cust_{i:08}")).collect()
    }

    #[test]
    fn contract_test_vectors() {
        let ten: Vec<u32> = ids().iter().map(|id| shard_of(id, 10)).collect();
        assert_eq!(ten, [0, 9, 9, 5, 2, 6, 2, 1, 5, 6]);
        let hundred: Vec<u32> = ids().iter().map(|id| shard_of(id, 100)).collect();
        assert_eq!(hundred, [10, 59, 39, 75, 2, 26, 22, 11, 85, 16]);
    }

    #[test]
    fn router_agrees_with_shard_of() {
        let mut router = ShardRouter::new(7);
        for (i, id) in ids().iter().chain(ids().iter().rev()).enumerate() {
            let number = id[5..].parse().unwrap();
            assert_eq!(router.route(id, number), shard_of(id, 7), "row {i}");
            assert_eq!(router.route(id, number), shard_of(id, 7));
        }
    }

    #[test]
    fn router_stays_exact_when_ids_share_a_slot() {
        // More ids than slots, scattered, twice over: many share a slot.
        let mut router = ShardRouter::new(10);
        let numbers: Vec<u32> = (0..ROUTER_SLOTS as u32 + 5_000)
            .map(|i| i.wrapping_mul(7_919) % 100_000_000)
            .collect();
        for _ in 0..2 {
            for &n in &numbers {
                let id = format!("cust_{n:08}");
                assert_eq!(router.route(&id, n), shard_of(&id, 10), "{id}");
            }
        }
    }
}
