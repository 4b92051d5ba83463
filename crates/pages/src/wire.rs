//! The client side of CRIU's page-server protocol, as `criu/page-xfer.c` (CRIU 4.2) speaks it
//! over one TCP connection (the dump side accepts exactly one):
//! - a request is a `page_server_iov` (32 bytes, native x86-64 layout: `cmd: u32`, 4 bytes of
//!   padding, `nr_pages: u64`, `vaddr: u64`, `dst_id: u64`);
//! - `PS_IOV_GET` asks for `nr_pages` lazy pages of process `dst_id` (its pid in the images, not
//!   encoded) from `vaddr`; the answer is a `page_server_iov` with `cmd = PS_IOV_ADD_F |
//!   PE_PRESENT << 16` and possibly fewer pages (clamped at the end of the server's run), then
//!   the data. Asking for a page the server does not hold makes it stop serving (it sends no
//!   zero-page answer), so only lazy pages may be asked for;
//! - `PS_IOV_CLOSE` ends the exchange: the server answers with an `i32` status (0) and then
//!   waits for the connection to close, after which the source's `criu dump` finishes.

pub const PS_IOV_ADD_F: u32 = 6;
pub const PS_IOV_GET: u32 = 7;
pub const PS_IOV_CLOSE: u32 = 0x1023;
pub const PE_PRESENT: u32 = 1 << 2;
pub const PS_CMD_BITS: u32 = 16;

/// Size of a `page_server_iov` on the wire.
pub const IOV_LEN: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iov {
    pub cmd: u32,
    pub nr_pages: u64,
    pub vaddr: u64,
    pub dst_id: u64,
}

impl Iov {
    pub fn get(pid: u32, vaddr: u64, nr_pages: u64) -> Iov {
        Iov {
            cmd: PS_IOV_GET,
            nr_pages,
            vaddr,
            dst_id: pid as u64,
        }
    }

    pub fn close() -> Iov {
        Iov {
            cmd: PS_IOV_CLOSE,
            nr_pages: 0,
            vaddr: 0,
            dst_id: 0,
        }
    }

    pub fn encode(&self) -> [u8; IOV_LEN] {
        let mut b = [0u8; IOV_LEN];
        b[0..4].copy_from_slice(&self.cmd.to_le_bytes());
        b[8..16].copy_from_slice(&self.nr_pages.to_le_bytes());
        b[16..24].copy_from_slice(&self.vaddr.to_le_bytes());
        b[24..32].copy_from_slice(&self.dst_id.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; IOV_LEN]) -> Iov {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        Iov {
            cmd: u32::from_le_bytes(b[0..4].try_into().unwrap()),
            nr_pages: u64_at(8),
            vaddr: u64_at(16),
            dst_id: u64_at(24),
        }
    }

    /// Checks an answer to `req`: pages of the same process and address, at most as many as
    /// asked for and at least one.
    pub fn check_answer(&self, req: &Iov) -> Result<(), String> {
        let want = PS_IOV_ADD_F | PE_PRESENT << PS_CMD_BITS;
        if self.cmd != want {
            return Err(format!(
                "page server answered command {:#x}, expected {want:#x}",
                self.cmd
            ));
        }
        if self.dst_id != req.dst_id || self.vaddr != req.vaddr {
            return Err(format!(
                "page server answered pid {} at {:#x}, asked for pid {} at {:#x}",
                self.dst_id, self.vaddr, req.dst_id, req.vaddr
            ));
        }
        if self.nr_pages == 0 || self.nr_pages > req.nr_pages {
            return Err(format!(
                "page server sent {} pages for a request of {}",
                self.nr_pages, req.nr_pages
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_criu() {
        let b = Iov::get(1, 0x7f00_0000_1000, 16).encode();
        assert_eq!(&b[0..4], &7u32.to_le_bytes());
        assert_eq!(&b[4..8], &[0; 4]);
        assert_eq!(&b[8..16], &16u64.to_le_bytes());
        assert_eq!(&b[16..24], &0x7f00_0000_1000u64.to_le_bytes());
        assert_eq!(&b[24..32], &1u64.to_le_bytes());
        assert_eq!(Iov::decode(&b), Iov::get(1, 0x7f00_0000_1000, 16));
        assert_eq!(&Iov::close().encode()[0..4], &0x1023u32.to_le_bytes());
    }

    #[test]
    fn answers_are_checked() {
        let req = Iov::get(1, 0x1000, 16);
        let mut a = req;
        a.cmd = PS_IOV_ADD_F | PE_PRESENT << 16;
        a.nr_pages = 4;
        assert!(a.check_answer(&req).is_ok());
        a.nr_pages = 17;
        assert!(a.check_answer(&req).is_err());
        a.nr_pages = 0;
        assert!(a.check_answer(&req).is_err());
        a.nr_pages = 4;
        a.vaddr = 0x2000;
        assert!(a.check_answer(&req).is_err());
        let mut b = req;
        b.nr_pages = 1;
        assert!(b.check_answer(&req).is_err(), "a GET is no answer");
    }
}
