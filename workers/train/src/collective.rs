//! Collectives for data parallelism. [`TcpCollective`] is the CPU backend (CI, CPU-only
//! runs): rank 0 listens, the other ranks connect, and an all-reduce sends every rank's buffer
//! to rank 0, which sums them **in rank order** and sends the sum back, so every rank ends with
//! bit-identical values (and so identical parameters after the optimizer step). The GPU
//! backend is NCCL through cudarc (`nccl.rs`, the `nccl` feature), bootstrapped over the same
//! TCP connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use crate::TrainError;

/// What the trainer needs from a process group.
pub trait Collective: Send {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Element-wise sum over ranks, in place, identical on every rank.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), TrainError>;
    /// Rank 0's values everywhere.
    fn broadcast(&mut self, buf: &mut [f32]) -> Result<(), TrainError>;
    /// Element-wise sum over ranks of a tensor, in place on its device. The default goes
    /// through host memory with [`Collective::all_reduce_sum`]; NCCL reduces on the GPU.
    fn all_reduce_tensor(&mut self, t: &mut Tensor) -> Result<(), TrainError> {
        let mut host: Vec<f32> = Vec::try_from(t.detach().to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1))?;
        self.all_reduce_sum(&mut host)?;
        let back = Tensor::from_slice(&host).view(t.size().as_slice()).to_kind(t.kind()).to_device(t.device());
        tch::no_grad(|| t.copy_(&back));
        Ok(())
    }
}

/// One process, nothing to reduce.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }
    fn broadcast(&mut self, _: &mut [f32]) -> Result<(), TrainError> {
        Ok(())
    }
}

/// A star over TCP with rank 0 at the centre.
pub struct TcpCollective {
    rank: usize,
    world: usize,
    /// Rank 0: streams to ranks 1.., in rank order. Others: the stream to rank 0.
    peers: Vec<TcpStream>,
}

fn net(what: &str) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io(format!("collective {what}"), e)
}

/// Handshake magic: a peer that does not speak it is dropped.
const HELLO: &[u8; 8] = b"LEHRTCP1";

/// Rank 0's answer to a good proof.
const WELCOME: &[u8; 2] = b"OK";

/// How long an accepted connection has to prove itself before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The proof a rank sends: sha256(secret ‖ nonce ‖ rank). The secret never crosses the wire.
fn proof(secret: &[u8], nonce: &[u8; 16], rank: u64) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update((secret.len() as u64).to_le_bytes());
    h.update(secret);
    h.update(nonce);
    h.update(rank.to_le_bytes());
    h.finalize().into()
}

/// Rank 0's side of one handshake: the rank a connection proved, or why it is dropped.
fn admit(s: &mut TcpStream, world: usize, secret: &[u8]) -> Result<usize, String> {
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| e.to_string())?;
    let nonce: [u8; 16] = rand::random();
    s.write_all(HELLO).and_then(|_| s.write_all(&nonce)).map_err(|e| format!("sending the challenge: {e}"))?;
    let mut hello = [0u8; 8 + 8 + 32];
    s.read_exact(&mut hello).map_err(|e| format!("no handshake ({e})"))?;
    if &hello[..8] != HELLO {
        return Err("not a lehr rank (bad handshake magic)".into());
    }
    let peer = u64::from_le_bytes(hello[8..16].try_into().expect("8 bytes"));
    let expected = proof(secret, &nonce, peer);
    if !lehr_schedules::job::constant_time_eq(&hello[16..], &expected) {
        return Err(format!("wrong secret for rank {peer}"));
    }
    if peer == 0 || peer as usize >= world {
        return Err(format!("announced rank {peer} (world {world})"));
    }
    s.write_all(WELCOME).map_err(|e| format!("sending the welcome: {e}"))?;
    s.set_read_timeout(None).map_err(|e| e.to_string())?;
    s.set_write_timeout(None).map_err(|e| e.to_string())?;
    Ok(peer as usize)
}

impl TcpCollective {
    /// Joins the group: rank 0 listens on `addr` and admits `world − 1` peers, each of which
    /// proves it knows `secret` (the per-attempt secret the rendezvous hands out) for the rank
    /// it announces; the others connect to it. Both sides give up after `timeout`. A
    /// connection that sends nothing, a stranger or a wrong secret is dropped (and logged)
    /// without stalling the group.
    pub fn connect(
        rank: usize,
        world: usize,
        addr: SocketAddr,
        timeout: Duration,
        secret: &[u8],
    ) -> Result<Self, TrainError> {
        if world == 0 || rank >= world {
            return Err(TrainError::Config(format!("rank {rank} is not below the world size {world}")));
        }
        let start = Instant::now();
        if rank == 0 {
            let listener = TcpListener::bind(addr).map_err(net("bind"))?;
            listener.set_nonblocking(true).map_err(net("listen"))?;
            let mut slots: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
            // Each handshake runs on its own thread, so a connection that stays silent (for up
            // to HANDSHAKE_TIMEOUT) never holds up the ranks behind it.
            let (tx, rx) = std::sync::mpsc::channel::<(TcpStream, SocketAddr, Result<usize, String>)>();
            while slots.iter().any(|s| s.is_none()) {
                match listener.accept() {
                    Ok((s, from)) => {
                        let (tx, secret) = (tx.clone(), secret.to_vec());
                        std::thread::spawn(move || {
                            let mut s = s;
                            let admitted = s
                                .set_nonblocking(false)
                                .and_then(|_| s.set_nodelay(true))
                                .map_err(|e| e.to_string())
                                .and_then(|_| admit(&mut s, world, &secret));
                            let _ = tx.send((s, from, admitted));
                        });
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(net("accept")(e)),
                }
                while let Ok((s, from, admitted)) = rx.try_recv() {
                    match admitted {
                        Ok(peer) if slots[peer - 1].is_none() => slots[peer - 1] = Some(s),
                        Ok(peer) => {
                            eprintln!("collective: {from} announced rank {peer}, which has joined already; dropped")
                        }
                        Err(why) => eprintln!("collective: dropped a connection from {from}: {why}"),
                    }
                }
                if slots.iter().all(|s| s.is_some()) {
                    break;
                }
                if start.elapsed() >= timeout {
                    let missing: Vec<String> = slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    return Err(TrainError::Config(format!(
                        "ranks {} did not join within {:?}",
                        missing.join(", "),
                        timeout
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let peers = slots.into_iter().map(|s| s.expect("every rank joined")).collect();
            return Ok(TcpCollective { rank, world, peers });
        }
        let mut s = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < timeout => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(net("connect")(e)),
            }
        };
        s.set_nodelay(true).map_err(net("nodelay"))?;
        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(net("handshake"))?;
        let mut challenge = [0u8; 8 + 16];
        s.read_exact(&mut challenge).map_err(net("handshake"))?;
        if &challenge[..8] != HELLO {
            return Err(TrainError::Config(format!("{addr} is not a lehr rank 0 (bad handshake magic)")));
        }
        let nonce: [u8; 16] = challenge[8..].try_into().expect("16 bytes");
        let mut hello = Vec::with_capacity(48);
        hello.extend_from_slice(HELLO);
        hello.extend_from_slice(&(rank as u64).to_le_bytes());
        hello.extend_from_slice(&proof(secret, &nonce, rank as u64));
        s.write_all(&hello).map_err(net("handshake"))?;
        let mut welcome = [0u8; 2];
        if s.read_exact(&mut welcome).is_err() || &welcome != WELCOME {
            return Err(TrainError::Config(format!(
                "rank 0 at {addr} refused this rank's handshake (a wrong collective secret: is it the same attempt?)"
            )));
        }
        s.set_read_timeout(None).map_err(net("handshake"))?;
        Ok(TcpCollective { rank, world, peers: vec![s] })
    }
}

impl TcpCollective {
    /// Rank 0's bytes everywhere (the NCCL unique id travels this way).
    pub fn broadcast_bytes(&mut self, bytes: &mut [u8]) -> Result<(), TrainError> {
        if self.rank == 0 {
            for p in &mut self.peers {
                p.write_all(bytes).map_err(net("send"))?;
            }
        } else {
            self.peers[0].read_exact(bytes).map_err(net("receive"))?;
        }
        Ok(())
    }
}

fn send(s: &mut TcpStream, buf: &[f32]) -> Result<(), TrainError> {
    let bytes: Vec<u8> = buf.iter().flat_map(|x| x.to_le_bytes()).collect();
    s.write_all(&bytes).map_err(net("send"))
}

fn recv(s: &mut TcpStream, out: &mut [f32]) -> Result<(), TrainError> {
    let mut bytes = vec![0u8; out.len() * 4];
    s.read_exact(&mut bytes).map_err(net("receive"))?;
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    Ok(())
}

impl Collective for TcpCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), TrainError> {
        if self.rank == 0 {
            let mut tmp = vec![0f32; buf.len()];
            for p in &mut self.peers {
                recv(p, &mut tmp)?;
                for (b, t) in buf.iter_mut().zip(&tmp) {
                    *b += t;
                }
            }
            for p in &mut self.peers {
                send(p, buf)?;
            }
        } else {
            send(&mut self.peers[0], buf)?;
            recv(&mut self.peers[0], buf)?;
        }
        Ok(())
    }

    fn broadcast(&mut self, buf: &mut [f32]) -> Result<(), TrainError> {
        if self.rank == 0 {
            for p in &mut self.peers {
                send(p, buf)?;
            }
        } else {
            recv(&mut self.peers[0], buf)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_silent_peers_and_wrong_secrets_do_not_stall_the_group() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let root = std::thread::spawn(move || TcpCollective::connect(0, 2, addr, Duration::from_secs(60), b"right"));
        std::thread::sleep(Duration::from_millis(200));
        // a connection that sends nothing, held open
        let _silent = TcpStream::connect(addr).unwrap();
        // a rank with the wrong secret is refused, and knows it
        let e = TcpCollective::connect(1, 2, addr, Duration::from_secs(5), b"wrong").err().expect("refused");
        assert!(e.to_string().contains("refused"), "{e}");
        // the real rank 1 still gets in, well before the group's timeout
        let t = Instant::now();
        let mut one = TcpCollective::connect(1, 2, addr, Duration::from_secs(30), b"right").unwrap();
        let mut zero = root.join().unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(25), "the silent connection held the group for {:?}", t.elapsed());
        let h = std::thread::spawn(move || {
            let mut b = [1.0f32, 2.0];
            one.all_reduce_sum(&mut b).unwrap();
            b
        });
        let mut b = [10.0f32, 20.0];
        zero.all_reduce_sum(&mut b).unwrap();
        assert_eq!(h.join().unwrap(), [11.0, 22.0]);
    }

    #[test]
    fn rank_zero_gives_up_when_ranks_never_come() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let e = TcpCollective::connect(0, 3, addr, Duration::from_millis(300), b"s").err().expect("times out");
        assert!(e.to_string().contains("ranks 1, 2 did not join"), "{e}");
    }

    #[test]
    fn three_ranks_sum_in_rank_order_and_broadcast() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let handles: Vec<_> = (0..3)
            .map(|r| {
                std::thread::spawn(move || {
                    let mut c = TcpCollective::connect(r, 3, addr, Duration::from_secs(10), b"s").unwrap();
                    let mut v = vec![r as f32 + 0.5, 1e-8 * r as f32];
                    c.all_reduce_sum(&mut v).unwrap();
                    let mut b = vec![r as f32; 2];
                    c.broadcast(&mut b).unwrap();
                    // Every byte value, as an NCCL id would carry them.
                    let mut id: Vec<u8> = if r == 0 { (0..=255u8).collect() } else { vec![0; 256] };
                    c.broadcast_bytes(&mut id).unwrap();
                    assert_eq!(id, (0..=255u8).collect::<Vec<_>>(), "rank {r}");
                    (v, b)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (v, b) in &results {
            assert_eq!(v, &results[0].0, "identical on every rank");
            assert_eq!(v[0], 0.5 + 1.5 + 2.5);
            assert_eq!(b, &vec![0.0, 0.0]);
        }
    }
}
