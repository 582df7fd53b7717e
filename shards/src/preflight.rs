//! Start-up checks that turn the ways io_uring can be unavailable into one clear,
//! actionable message instead of an executor panic.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// glommio refuses to start below this (docs/runtime.md).
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "io_uring is disabled by sysctl kernel.io_uring_disabled = {value}; enable it with \
         'sysctl -w kernel.io_uring_disabled=0' (and in /etc/sysctl.d/ to keep it)"
    )]
    IoUringDisabled { value: u32 },
    #[error(
        "io_uring_setup is not permitted ({errno}): a seccomp profile blocks it (Docker's default \
         profile does); run with --security-opt seccomp=unconfined or a profile that allows \
         io_uring_setup, io_uring_enter and io_uring_register"
    )]
    IoUringBlocked { errno: nix::errno::Errno },
    #[error(
        "io_uring is not available in this kernel ({errno}); shardcast needs Linux 5.10 or newer"
    )]
    IoUringMissing { errno: nix::errno::Errno },
    #[error(
        "RLIMIT_MEMLOCK is {current} bytes and could not be raised (hard limit {hard}); glommio needs \
         at least {MIN_MEMLOCK_BYTES} bytes: set 'LimitMEMLOCK=infinity' in the systemd unit, or \
         'ulimit -l unlimited' before starting"
    )]
    MemlockTooLow { current: u64, hard: u64 },
}

/// Check everything; raise the soft RLIMIT_MEMLOCK to the hard limit and fix malloc's
/// mmap threshold on the way.
pub fn check() -> Result<(), PreflightError> {
    return_large_blocks_to_the_kernel();
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        let value: u32 = s.trim().parse().unwrap_or(0);
        // 1 = only for the io_uring_group (root passes); 2 = disabled for everyone.
        if value == 2 || (value == 1 && !nix::unistd::geteuid().is_root()) {
            return Err(PreflightError::IoUringDisabled { value });
        }
    }
    probe_io_uring()?;
    raise_memlock()
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (one descriptor per connection; the
/// shell default of 1024 is far below what a streaming server holds, and nothing here
/// uses select()), and return the soft limit now in force.
pub fn raise_open_files() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// glibc's malloc serves blocks of 128 KiB and more with their own mmap, returned to the
/// kernel on free, but each such free raises the threshold to that block's size (up to
/// 32 MiB). After that, large buffers (partial RTMP messages of a flood, HLS segments)
/// come from the heap, which only shrinks from its top: with small allocations of live
/// connections interleaved, their pages stayed with the process after the load was
/// gone (tests/badclient.rs: RSS 20.5 MB before 12 x 8 MiB of partial messages, 37 MB
/// after they closed, in the full suite). A fixed threshold keeps large blocks on their
/// own mappings, so they always go back; a few mmap calls per second for keyframes and
/// HLS segments cost nothing measurable.
fn return_large_blocks_to_the_kernel() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc tunable; it runs before any shard starts.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn probe_io_uring() -> Result<(), PreflightError> {
    // io_uring_setup(1, &params): the cheapest proof that the syscall is allowed.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes exactly one struct io_uring_params (120
    // bytes on every Linux version we support) through the pointer.
    let fd =
        unsafe { nix::libc::syscall(nix::libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: fd was just returned to us by the kernel and is closed exactly once.
        unsafe { nix::libc::close(fd as i32) };
        return Ok(());
    }
    let errno = nix::errno::Errno::last();
    match errno {
        nix::errno::Errno::ENOSYS => Err(PreflightError::IoUringMissing { errno }),
        nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => {
            Err(PreflightError::IoUringBlocked { errno })
        }
        // Out of memory or a resource limit: let the executor report it in context.
        _ => Ok(()),
    }
}

fn raise_memlock() -> Result<(), PreflightError> {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_MEMLOCK) else {
        return Ok(());
    };
    if soft >= MIN_MEMLOCK_BYTES * 32 || soft == nix::libc::RLIM_INFINITY {
        return Ok(());
    }
    // Root may lift both limits; anyone may lift the soft one to the hard one. Buffer
    // registration silently stops under ~10 MiB per executor, so aim well above the minimum.
    if setrlimit(
        Resource::RLIMIT_MEMLOCK,
        nix::libc::RLIM_INFINITY,
        nix::libc::RLIM_INFINITY,
    )
    .is_ok()
        || setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard).is_ok()
    {
        let (now, _) = getrlimit(Resource::RLIMIT_MEMLOCK).unwrap_or((soft, hard));
        if now >= MIN_MEMLOCK_BYTES {
            return Ok(());
        }
    }
    if soft >= MIN_MEMLOCK_BYTES {
        return Ok(());
    }
    Err(PreflightError::MemlockTooLow {
        current: soft,
        hard,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_on_this_machine() {
        // The CI machine is the deployment target: io_uring works and root can raise memlock.
        super::check().expect("preflight passes on the CI machine");
    }
}
