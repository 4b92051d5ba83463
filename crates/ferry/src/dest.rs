//! Where the proxy may connect: only inside the runtime networks the control plane hands out,
//! `SLOTS` `/30` slots from `--subnet` on. Anything else (an address computed from a wrong
//! `--subnet`, a corrupted row) would leave the machine with a user's traffic, so it is refused.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// How many `/30` runtime networks the control plane hands out from `--subnet` (a `/16`).
pub const SLOTS: u32 = 16_384;

/// The addresses runtime networks occupy: `[first, last]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Managed {
    first: u32,
    last: u32,
}

impl Managed {
    pub fn new(subnet: Ipv4Addr, slots: u32) -> Managed {
        let first = u32::from(subnet);
        let last = first.saturating_add(slots.saturating_mul(4).saturating_sub(1));
        Managed { first, last }
    }

    pub fn contains(&self, a: SocketAddr) -> bool {
        match a.ip() {
            IpAddr::V4(v4) => (self.first..=self.last).contains(&u32::from(v4)),
            IpAddr::V6(_) => false,
        }
    }
}

impl std::fmt::Display for Managed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            Ipv4Addr::from(self.first),
            Ipv4Addr::from(self.last)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_the_slots_from_the_subnet() {
        let m = Managed::new("10.201.0.0".parse().unwrap(), SLOTS);
        assert_eq!(m.to_string(), "10.201.0.0-10.201.255.255");
        assert!(m.contains("10.201.0.2:8888".parse().unwrap()));
        assert!(m.contains("10.201.255.254:8888".parse().unwrap()));
        assert!(!m.contains("10.202.0.2:8888".parse().unwrap()));
        assert!(!m.contains("10.200.255.255:8888".parse().unwrap()));
        assert!(!m.contains("127.0.0.1:8888".parse().unwrap()));
        assert!(!m.contains("[::1]:8888".parse().unwrap()));
        let top = Managed::new("255.255.255.0".parse().unwrap(), SLOTS);
        assert!(
            top.contains("255.255.255.255:1".parse().unwrap()),
            "no overflow"
        );
    }
}
