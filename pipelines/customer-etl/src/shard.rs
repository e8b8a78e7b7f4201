//! Routing customers to shards: `u32_be(md5(customer_id)[0..4]) % num_shards`.

use md5::{Digest, Md5};

/// The shard of a (trimmed) customer id among `num_shards` shards.
///
/// # Panics
/// When `num_shards` is 0.
pub fn shard_of(customer_id: &str, num_shards: u32) -> u32 {
    let digest = Md5::digest(customer_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % num_shards
}

/// Routes customer ids to shards, remembering the last id it saw: rows of one
/// customer often come together, and MD5 is the partition step's costliest
/// per-row work after parsing.
#[derive(Debug, Clone)]
pub struct ShardRouter {
    num_shards: u32,
    last: Option<(u32, u32)>,
}

impl ShardRouter {
    /// A router over `num_shards` (at least 1) shards.
    pub fn new(num_shards: u32) -> Self {
        assert!(num_shards > 0, "num_shards must be at least 1");
        ShardRouter {
            num_shards,
            last: None,
        }
    }

    /// Number of shards.
    pub fn num_shards(&self) -> u32 {
        self.num_shards
    }

    /// The shard of a valid customer id, given as its text and its 8-digit number.
    pub fn route(&mut self, customer_id: &str, number: u32) -> u32 {
        match self.last {
            Some((n, shard)) if n == number => shard,
            _ => {
                let shard = shard_of(customer_id, self.num_shards);
                self.last = Some((number, shard));
                shard
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
