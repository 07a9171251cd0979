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

impl TcpCollective {
    /// Joins the group: rank 0 listens on `addr` and waits for `world − 1` peers (each sends
    /// its rank first); the others connect to it, retrying until `timeout`.
    pub fn connect(rank: usize, world: usize, addr: SocketAddr, timeout: Duration) -> Result<Self, TrainError> {
        if world == 0 || rank >= world {
            return Err(TrainError::Config(format!("rank {rank} is not below the world size {world}")));
        }
        if rank == 0 {
            let listener = TcpListener::bind(addr).map_err(net("bind"))?;
            let mut slots: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
            for _ in 1..world {
                let (mut s, _) = listener.accept().map_err(net("accept"))?;
                s.set_nodelay(true).map_err(net("nodelay"))?;
                let mut r = [0u8; 8];
                s.read_exact(&mut r).map_err(net("handshake"))?;
                let peer = u64::from_le_bytes(r) as usize;
                if peer == 0 || peer >= world || slots[peer - 1].is_some() {
                    return Err(TrainError::Config(format!("a peer announced rank {peer} (world {world})")));
                }
                slots[peer - 1] = Some(s);
            }
            let peers = slots.into_iter().map(|s| s.expect("every rank joined")).collect();
            return Ok(TcpCollective { rank, world, peers });
        }
        let start = Instant::now();
        let mut s = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < timeout => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(net("connect")(e)),
            }
        };
        s.set_nodelay(true).map_err(net("nodelay"))?;
        s.write_all(&(rank as u64).to_le_bytes()).map_err(net("handshake"))?;
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
    fn three_ranks_sum_in_rank_order_and_broadcast() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let handles: Vec<_> = (0..3)
            .map(|r| {
                std::thread::spawn(move || {
                    let mut c = TcpCollective::connect(r, 3, addr, Duration::from_secs(10)).unwrap();
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
