//! The connection to the source's page server: requests are written from the server loop; one
//! reader thread reads the answers in request order (the page server answers strictly in order)
//! and hands them over through a channel, waking the loop through a pipe.

use crate::wire::{Iov, IOV_LEN};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{channel, Receiver, Sender};

/// What the reader expects next, in the order the requests were sent.
enum Expect {
    Pages(Iov),
    CloseAck,
}

/// What came back.
pub enum Arrival {
    Pages { pid: u32, vaddr: u64, data: Vec<u8> },
    CloseAck(i32),
    Broken(String),
}

pub struct Link {
    stream: TcpStream,
    expect: Sender<Expect>,
    pub arrivals: Receiver<Arrival>,
    wake_rd: OwnedFd,
}

impl Link {
    pub fn connect(addr: &str) -> std::io::Result<Link> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let (wake_rd, wake_wr) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(std::io::Error::from)?;
        let (etx, erx) = channel();
        let (atx, arx) = channel();
        let rd = stream.try_clone()?;
        std::thread::spawn(move || reader(rd, erx, atx, wake_wr));
        Ok(Link {
            stream,
            expect: etx,
            arrivals: arx,
            wake_rd,
        })
    }

    /// The descriptor that turns readable when something arrived.
    pub fn wake_fd(&self) -> RawFd {
        self.wake_rd.as_raw_fd()
    }

    /// Empties the wake pipe.
    pub fn drain_wake(&self) {
        let mut b = [0u8; 64];
        while matches!(nix::unistd::read(self.wake_rd.as_raw_fd(), &mut b), Ok(n) if n > 0) {}
    }

    pub fn get(&mut self, pid: u32, vaddr: u64, nr_pages: u64) -> std::io::Result<()> {
        let req = Iov::get(pid, vaddr, nr_pages);
        let _ = self.expect.send(Expect::Pages(req));
        self.stream.write_all(&req.encode())
    }

    pub fn close(&mut self) -> std::io::Result<()> {
        let _ = self.expect.send(Expect::CloseAck);
        self.stream.write_all(&Iov::close().encode())
    }
}

fn reader(mut s: TcpStream, expect: Receiver<Expect>, out: Sender<Arrival>, wake: OwnedFd) {
    let send = |a: Arrival| {
        let _ = out.send(a);
        let _ = nix::unistd::write(&wake, &[1]);
    };
    while let Ok(e) = expect.recv() {
        match e {
            Expect::Pages(req) => {
                let mut h = [0u8; IOV_LEN];
                if let Err(e) = s.read_exact(&mut h) {
                    return send(Arrival::Broken(format!(
                        "reading from the page server: {e}"
                    )));
                }
                let a = Iov::decode(&h);
                if let Err(e) = a.check_answer(&req) {
                    return send(Arrival::Broken(e));
                }
                let mut data = vec![0u8; (a.nr_pages * crate::PAGE) as usize];
                if let Err(e) = s.read_exact(&mut data) {
                    return send(Arrival::Broken(format!(
                        "reading pages from the page server: {e}"
                    )));
                }
                send(Arrival::Pages {
                    pid: a.dst_id as u32,
                    vaddr: a.vaddr,
                    data,
                });
            }
            Expect::CloseAck => {
                let mut b = [0u8; 4];
                match s.read_exact(&mut b) {
                    Ok(()) => send(Arrival::CloseAck(i32::from_le_bytes(b))),
                    Err(e) => send(Arrival::Broken(format!(
                        "the page server did not acknowledge the end: {e}"
                    ))),
                }
                return;
            }
        }
    }
}
