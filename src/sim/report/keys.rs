//! What a run says about requests picked by key: how many reached their
//! key's home backend, and how far in-flight counts rose above the bound
//! of consistent hashing with bounded loads.

use super::{Run, ratio};

impl Run {
    /// Of the attempts after the warm-up that carried a key, the share
    /// that reached the key's home backend (for configurations that pick
    /// by key; `None` otherwise).
    pub fn home_share(&self) -> Option<f64> {
        let r = &self.record;
        (r.keyed_attempts > 0).then(|| ratio(r.home_attempts, r.keyed_attempts))
    }

    /// After the warm-up, by total: for each count `P` of attempts in
    /// flight over all backends when an attempt arrived (that attempt
    /// included), the most attempts its backend then held (0 where no
    /// attempt arrived at that total). A backend's count runs from the call
    /// until the caller takes the answer or drops the attempt, as the
    /// channel counts it; with one client, these are the channel's counts.
    pub fn peak_in_flight_by_total(&self) -> &[u32] {
        &self.record.peak_by_total
    }

    /// The most attempts backend `backend` held at once after the warm-up
    /// (counted as [`peak_in_flight_by_total`](Self::peak_in_flight_by_total)
    /// counts them).
    pub fn peak_in_flight(&self, backend: usize) -> u32 {
        self.record
            .peak_in_flight
            .get(backend)
            .copied()
            .unwrap_or(0)
    }

    /// The most any arriving attempt's backend held above
    /// `⌈c × P / endpoints⌉` (`P` the total in flight, that attempt
    /// included): at most zero when no backend ever exceeded `c` times the
    /// average at an arrival.
    pub fn in_flight_over_bound(&self, c: f64, endpoints: usize) -> i64 {
        let n = endpoints.max(1) as f64;
        self.record
            .peak_by_total
            .iter()
            .enumerate()
            .filter(|&(_, &peak)| peak > 0)
            .map(|(total, &peak)| i64::from(peak) - (c * total as f64 / n - 1e-9).ceil() as i64)
            .max()
            .unwrap_or(0)
    }
}
