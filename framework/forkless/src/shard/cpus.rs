//! TEMPORARY placeholder until the real module lands (same signatures).
pub(crate) struct CpuBudget {
    pub(crate) cpus: Vec<usize>,
    pub(crate) quota: Option<f64>,
}
pub(crate) fn detect() -> CpuBudget {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    CpuBudget {
        cpus: (0..n).collect(),
        quota: None,
    }
}
impl CpuBudget {
    pub(crate) fn max_shards(&self) -> usize {
        self.cpus.len().max(1)
    }
    pub(crate) fn placement(&self, shards: usize) -> Vec<Option<usize>> {
        if shards <= self.cpus.len() {
            self.cpus[..shards].iter().map(|&c| Some(c)).collect()
        } else {
            vec![None; shards]
        }
    }
}
