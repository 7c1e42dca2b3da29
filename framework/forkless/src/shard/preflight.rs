//! TEMPORARY placeholder until the real module lands (same signatures).
pub(crate) const DEFAULT_IO_MEMORY: usize = 1 << 20;
#[derive(Debug)]
pub(crate) enum PreflightError {
    Never,
}
impl std::fmt::Display for PreflightError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}
pub(crate) fn check_io_uring() -> Result<(), PreflightError> {
    Ok(())
}
pub(crate) fn memlock_limit() -> Option<u64> {
    None
}
pub(crate) fn has_ipc_lock() -> bool {
    true
}
pub(crate) fn io_memory_per_shard(
    _s: usize,
    wanted: usize,
    _l: Option<u64>,
    _i: bool,
) -> Result<usize, PreflightError> {
    let _ = PreflightError::Never;
    Ok(wanted)
}
