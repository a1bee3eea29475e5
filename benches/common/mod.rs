//! What both benchmark binaries share: the journaled-actor state the fold workloads rebuild.

/// The state of an account, rebuilt from its events: the amount is the first eight bytes of an
/// event's data, little-endian.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub balance: i64,
    pub deposits: u64,
}

impl Account {
    /// The state after `event_type` with `data`.
    pub fn apply(mut self, event_type: &str, data: &[u8]) -> Account {
        let amount = data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_le_bytes);
        match event_type {
            "Deposited" => {
                self.balance += amount;
                self.deposits += 1;
            }
            "Withdrawn" => self.balance -= amount,
            _ => {}
        }
        self
    }
}
