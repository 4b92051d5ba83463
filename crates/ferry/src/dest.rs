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

    /// A route to a real listener outside the managed range is refused with a 502, and that
    /// listener never sees a connection.
    #[tokio::test]
    async fn the_proxy_never_connects_outside_the_managed_range() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let outside = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = outside.local_addr().unwrap();
        let p = crate::proxy::Proxy::new(std::time::Duration::from_secs(1));
        p.set_managed(Managed::new("10.201.0.0".parse().unwrap(), SLOTS));
        p.set("rt", crate::proxy::Route::Open(target));
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let app = crate::proxy::router(p);
        tokio::spawn(async move { axum::serve(front, app).await });
        for path in ["/r/rt/mrp/v1/capabilities", "/r/rt/mrp/v1/execute"] {
            let mut s = tokio::net::TcpStream::connect(front_addr).await.unwrap();
            let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("HTTP/1.1 502"), "{out}");
            assert!(out.contains("outside the runtime networks"), "{out}");
        }
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(300), outside.accept()).await;
        assert!(accepted.is_err(), "the proxy connected to {target}");
    }
}
