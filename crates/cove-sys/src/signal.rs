//! Signals: sets, masks, signalfd and sigwait for the container's runner
//! and init, and signals to one process, by pid or pidfd.

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io;

/// A signal set of the given signals.
pub fn signal_set(signals: &[Signal]) -> SigSet {
    let mut set = SigSet::empty();
    for &s in signals {
        set.add(s);
    }
    set
}

/// Blocks `signals` for this thread (and the processes it forks).
pub fn block_signals(signals: &[Signal]) -> io::Result<()> {
    Ok(signal::sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&signal_set(signals)),
        None,
    )?)
}

/// Restores what a freshly started process expects: every signal at its
/// default action and none blocked (Rust ignores SIGPIPE, and the init
/// blocks the signals it forwards; neither should reach the job).
pub fn reset_signals() {
    let default = signal::SigAction::new(
        signal::SigHandler::SigDfl,
        signal::SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in Signal::iterator() {
        // SAFETY: installing the default disposition runs no handler code;
        // SIGKILL and SIGSTOP are refused harmlessly.
        let _ = unsafe { signal::sigaction(sig, &default) };
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// A descriptor from which the (blocked) `signals` are read.
pub fn signal_fd(signals: &[Signal]) -> io::Result<SignalFd> {
    Ok(SignalFd::with_flags(
        &signal_set(signals),
        SfdFlags::SFD_CLOEXEC,
    )?)
}

/// Reads one pending signal from a signalfd; `None` if it was one this
/// build does not name.
pub fn read_signal(fd: &SignalFd) -> io::Result<Option<Signal>> {
    let info = fd.read_signal()?;
    Ok(info.and_then(|i| i32::try_from(i.ssi_signo).ok()?.try_into().ok()))
}

/// Waits for one of `signals` (which must be blocked).
pub fn wait_for_signal(signals: &SigSet) -> io::Result<Signal> {
    Ok(signals.wait()?)
}

pub fn kill(pid: i32, sig: Signal) -> io::Result<()> {
    Ok(signal::kill(nix::unistd::Pid::from_raw(pid), sig)?)
}

/// `PR_SET_PDEATHSIG`: `sig` arrives when the parent dies.
pub fn set_parent_death_signal(sig: Signal) -> io::Result<()> {
    Ok(nix::sys::prctl::set_pdeathsig(sig)?)
}

/// Signals `pid` if it is still the process `still_it` recognises: the
/// pidfd is opened first and the check runs after, so a pid recycled in
/// between is never signalled.
pub fn signal_if(pid: i32, sig: Signal, still_it: impl FnOnce() -> bool) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    let Ok(pidfd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) else {
        return false;
    };
    if !still_it() {
        return false;
    }
    let Some(sig) = rustix::process::Signal::from_named_raw(sig as i32) else {
        return false;
    };
    rustix::process::pidfd_send_signal(&pidfd, sig).is_ok()
}
