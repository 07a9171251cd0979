//! The GPU collective: NCCL through cudarc (dynamic loading, so the binary starts on machines
//! without NCCL and says so only when asked to use it). One process per GPU. Rank 0 creates the
//! NCCL unique id and hands it to the other ranks over the TCP bootstrap connection whose
//! address the coordinator's rendezvous gave out (or `--rendezvous` by hand), as PyTorch does
//! with its TCP store; then gradients are all-reduced in place on the GPU, on the default
//! stream, so they are ordered with libtorch's kernels.
//!
//! Not yet run on a GPU in this repository's CI (no GPU there): see docs/training.md.

use std::ffi::c_void;

use cudarc::nccl::{result, sys};
use tch::{Device, Kind, Tensor};

use crate::collective::{Collective, TcpCollective};
use crate::TrainError;

fn nccl_err(what: &str) -> impl Fn(result::NcclError) -> TrainError + '_ {
    move |e| TrainError::Collective(format!("NCCL {what}: {:?}", e.0))
}

pub struct NcclCollective {
    comm: sys::ncclComm_t,
    rank: usize,
    world: usize,
}

// SAFETY: the communicator is used by one thread at a time (the trainer's); NCCL allows a
// communicator to move between threads as long as calls on it are not concurrent.
unsafe impl Send for NcclCollective {}

impl NcclCollective {
    /// Whether libnccl can be loaded (the `libnccl.so` name must resolve: scripts/setup.sh
    /// links it next to PyTorch's `libnccl.so.2`).
    pub fn available() -> bool {
        // SAFETY: only tries to dlopen candidate names.
        unsafe { sys::is_culib_present() }
    }

    /// Joins the group: `bootstrap` (already connected) carries rank 0's unique id to the
    /// others, then every rank initializes its communicator on its current CUDA device.
    pub fn init(mut bootstrap: TcpCollective) -> Result<Self, TrainError> {
        if !Self::available() {
            return Err(TrainError::Collective(
                "libnccl.so cannot be loaded: put the directory holding it (PyTorch's nvidia/nccl/lib, with a \
                 libnccl.so -> libnccl.so.2 link) on LD_LIBRARY_PATH, or use --collective tcp"
                    .into(),
            ));
        }
        let (rank, world) = (bootstrap.rank(), bootstrap.world());
        let mut bytes = [0u8; 128];
        if rank == 0 {
            let id = result::get_uniqueid().map_err(nccl_err("unique id"))?;
            for (b, c) in bytes.iter_mut().zip(id.internal.iter()) {
                *b = *c as u8;
            }
        }
        bootstrap.broadcast_bytes(&mut bytes)?;
        let mut id = sys::ncclUniqueId { internal: [0; 128] };
        for (c, b) in id.internal.iter_mut().zip(bytes.iter()) {
            *c = *b as _;
        }
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; the id came from rank 0's ncclGetUniqueId.
        unsafe { result::comm_init_rank(&mut comm, world as i32, id, rank as i32) }.map_err(nccl_err("init"))?;
        Ok(NcclCollective { comm, rank, world })
    }

    fn check(t: &Tensor) -> Result<sys::ncclDataType_t, TrainError> {
        if !t.device().is_cuda() || !t.is_contiguous() {
            return Err(TrainError::Collective("NCCL needs a contiguous CUDA tensor".into()));
        }
        match t.kind() {
            Kind::Float => Ok(sys::ncclDataType_t::ncclFloat32),
            Kind::BFloat16 => Ok(sys::ncclDataType_t::ncclBfloat16),
            k => Err(TrainError::Collective(format!("NCCL: no reduction for {k:?} tensors here"))),
        }
    }

    fn host_round_trip(&mut self, buf: &mut [f32], reduce: bool) -> Result<(), TrainError> {
        let mut t = Tensor::from_slice(buf).to_device(Device::Cuda(0));
        if reduce {
            self.all_reduce_tensor(&mut t)?;
        } else {
            let dt = Self::check(&t)?;
            let p = t.data_ptr();
            // SAFETY: `p` points at `numel` elements of `dt` on this rank's device.
            unsafe { result::broadcast(p as *const c_void, p, t.numel(), dt, 0, self.comm, std::ptr::null_mut()) }
                .map_err(nccl_err("broadcast"))?;
        }
        let back: Vec<f32> = Vec::try_from(t.to_device(Device::Cpu))?;
        buf.copy_from_slice(&back);
        Ok(())
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), TrainError> {
        self.host_round_trip(buf, true)
    }
    fn broadcast(&mut self, buf: &mut [f32]) -> Result<(), TrainError> {
        self.host_round_trip(buf, false)
    }
    fn all_reduce_tensor(&mut self, t: &mut Tensor) -> Result<(), TrainError> {
        let dt = Self::check(t)?;
        let p = t.data_ptr();
        // SAFETY: in place on `numel` elements of `dt` on this rank's device; the null stream
        // is the legacy default stream libtorch's kernels run on.
        unsafe {
            result::all_reduce(
                p as *const c_void,
                p,
                t.numel(),
                dt,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                std::ptr::null_mut(),
            )
        }
        .map_err(nccl_err("all-reduce"))?;
        Ok(())
    }
}

impl Drop for NcclCollective {
    fn drop(&mut self) {
        // SAFETY: the communicator was initialized and is not used after this.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}

#[cfg(test)]
mod tests {
    /// scripts/setup.sh links PyTorch's libnccl.so.2 as libnccl.so and build.rs puts its
    /// directory on the rpath: the library loads (no GPU needed for that).
    #[test]
    fn libnccl_loads_from_the_torch_install() {
        assert!(super::NcclCollective::available(), "libnccl.so does not load: rerun scripts/setup.sh");
    }
}
