//! Leader election through a coordination.k8s.io Lease, with client-go's semantics: a
//! holder renews every `retry_period`; a candidate takes the lease once it has seen the
//! same record unchanged for `lease_duration` (local clock, so clock skew does not matter);
//! a leader that cannot renew within `renew_deadline` stops leading.
//!
//! A candidate watches the Lease as well as polling it, so it sees each renewal when it
//! is written rather than up to a retry period later, and it tries to take over at the
//! moment the record it saw expires rather than at its next poll: a dead leader is
//! replaced one lease duration after its last renewal, not up to two retry periods later.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use tokio::sync::watch;

/// Cilium's lease name.
pub const LEASE_NAME: &str = "cilium-operator-resource-lock";

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// The part of a Lease the election looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub holder: Option<String>,
    pub lease_duration_seconds: Option<i32>,
    pub renew_time: Option<String>,
    pub transitions: i32,
}

/// What the candidate should do with the lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: write a new renew time.
    Renew,
    /// Free or expired: write ourselves in as holder.
    TakeOver,
    /// Someone else holds it and it has not expired.
    Wait,
}

/// When a candidate first saw the current record.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    record: Option<Record>,
    since: Option<Instant>,
}

impl Observation {
    /// Notes that `record` was read at `now`; its clock restarts only when it changed.
    fn see(&mut self, record: &Record, now: Instant) {
        if self.record.as_ref() != Some(record) {
            self.record = Some(record.clone());
            self.since = Some(now);
        }
    }

    /// When the record last seen expires, if another replica holds it.
    fn expiry(&self, default_duration: Duration) -> Option<Instant> {
        let record = self.record.as_ref()?;
        record.holder.as_deref().filter(|h| !h.is_empty())?;
        Some(self.since? + record_duration(record, default_duration))
    }
}

fn record_duration(record: &Record, default_duration: Duration) -> Duration {
    record
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs)
}

/// Decides from the lease's record, who we are, and how long we have watched the record.
pub fn decide(
    record: &Record,
    me: &str,
    observed: &mut Observation,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    match record.holder.as_deref() {
        Some(holder) if holder == me => return Decision::Renew,
        None | Some("") => return Decision::TakeOver,
        Some(_) => {}
    }
    observed.see(record, now);
    let duration = record_duration(record, default_duration);
    match observed.since {
        Some(since) if now.duration_since(since) >= duration => Decision::TakeOver,
        _ => Decision::Wait,
    }
}

fn record_of(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity,
        lease_duration_seconds: spec.lease_duration_seconds,
        renew_time: spec.renew_time.map(|t| t.0.to_string()),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// Runs the election forever; `leading` says whether this replica may write. Returns only
/// when leadership, once held, is lost: the caller must stop writing and exit.
pub async fn run(
    api: Api<Lease>,
    me: String,
    timing: Timing,
    leading: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let observed = Arc::new(Mutex::new(Observation::default()));
    let watching = tokio::spawn(observe(api.clone(), observed.clone()));
    let elected = elect(&api, &me, timing, &leading, &observed).await;
    watching.abort();
    elected
}

/// Stamps each version of the Lease with when it was seen, as soon as it is written.
async fn observe(api: Api<Lease>, observed: Arc<Mutex<Observation>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={LEASE_NAME}"));
    let events = cilium_crds::cache::resume(api.clone().into_client(), watcher(api, config));
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        if let Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) = event {
            lock(&observed).see(&record_of(&lease), Instant::now());
        }
    }
}

fn lock(observed: &Mutex<Observation>) -> std::sync::MutexGuard<'_, Observation> {
    observed.lock().unwrap_or_else(|p| p.into_inner())
}

async fn elect(
    api: &Api<Lease>,
    me: &str,
    timing: Timing,
    leading: &watch::Sender<bool>,
    observed: &Mutex<Observation>,
) -> anyhow::Result<()> {
    let mut last_renew: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // client-go's guarantee: no attempt outlasts the renew deadline (a candidate's is
        // bounded by it too), so a request that stalls (a partition, an apiserver whose
        // etcd is gone) cannot keep a leader leading past it.
        let bound = attempt_bound(last_renew, now, &timing);
        let attempt = try_acquire_or_renew(api, me, &timing, observed, now);
        let result = match tokio::time::timeout(bound, attempt).await {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(_) => Err(anyhow::anyhow!(
                "the lease request got no answer within {bound:?}"
            )),
        };
        match result {
            Ok(true) => {
                if last_renew.is_none() {
                    tracing::info!(identity = %me, lease = LEASE_NAME, "became leader");
                }
                last_renew = Some(now);
                leading.send_replace(true);
            }
            Ok(false) if last_renew.is_some() => {
                leading.send_replace(false);
                anyhow::bail!("leader election lost: another replica holds {LEASE_NAME}");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "lease update failed");
                if last_renew.is_some_and(|t| past_deadline(t, Instant::now(), &timing)) {
                    leading.send_replace(false);
                    anyhow::bail!(
                        "leader election lost: lease not renewed within {:?}",
                        timing.renew_deadline
                    );
                }
            }
        }
        let expiry = match last_renew {
            Some(_) => None,
            None => lock(observed).expiry(timing.lease_duration),
        };
        tokio::time::sleep(next_attempt_in(expiry, Instant::now(), timing.retry_period)).await;
    }
}

/// How long to wait before the next attempt: a retry period, or less when the lease a
/// candidate waits for expires sooner.
fn next_attempt_in(expiry: Option<Instant>, now: Instant, retry_period: Duration) -> Duration {
    expiry.map_or(retry_period, |at| {
        at.saturating_duration_since(now).min(retry_period)
    })
}

/// How long an attempt may take: a leader's until its renew deadline, a candidate's the
/// renew deadline.
fn attempt_bound(last_renew: Option<Instant>, now: Instant, timing: &Timing) -> Duration {
    match last_renew {
        Some(renewed) => (renewed + timing.renew_deadline).saturating_duration_since(now),
        None => timing.renew_deadline,
    }
}

/// Whether a leader that last renewed at `renewed` must stop leading at `now`.
fn past_deadline(renewed: Instant, now: Instant, timing: &Timing) -> bool {
    now.duration_since(renewed) >= timing.renew_deadline
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    me: &str,
    timing: &Timing,
    observed: &Mutex<Observation>,
    now: Instant,
) -> Result<bool, kube::Error> {
    let now_time = MicroTime(Timestamp::now());
    let duration_seconds = i32::try_from(timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.into()),
                lease_duration_seconds: Some(duration_seconds),
                acquire_time: Some(now_time.clone()),
                renew_time: Some(now_time),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let record = record_of(&lease);
    let decision = decide(&record, me, &mut lock(observed), now, timing.lease_duration);
    let spec = lease.spec.get_or_insert_with(Default::default);
    match decision {
        Decision::Wait => return Ok(false),
        Decision::Renew => {}
        Decision::TakeOver => {
            spec.holder_identity = Some(me.into());
            spec.acquire_time = Some(now_time.clone());
            spec.lease_transitions = Some(record.transitions + 1);
        }
    }
    spec.lease_duration_seconds = Some(duration_seconds);
    spec.renew_time = Some(now_time);
    // `replace` carries the resourceVersion we read: a concurrent writer makes this a 409.
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up (on shutdown) so another replica need not wait for it to expire.
pub async fn release(api: &Api<Lease>, me: &str) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(me) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    api.replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    #[test]
    fn no_attempt_outlasts_the_renew_deadline() {
        let timing = Timing {
            lease_duration: DURATION,
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(attempt_bound(None, at(0), &timing), Duration::from_secs(10));
        assert_eq!(
            attempt_bound(Some(t0), at(4), &timing),
            Duration::from_secs(6)
        );
        assert_eq!(attempt_bound(Some(t0), at(12), &timing), Duration::ZERO);
        assert!(!past_deadline(t0, at(9), &timing));
        assert!(past_deadline(t0, at(10), &timing));
    }

    /// What "me" decides on seeing `record` at `at`.
    fn decide_at(record: &Record, seen: &mut Observation, at: Instant) -> Decision {
        decide(record, "me", seen, at, DURATION)
    }

    fn held_by(holder: &str, renew: &str) -> Record {
        Record {
            holder: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(renew.into()),
            transitions: 1,
        }
    }

    #[test]
    fn a_free_lease_is_taken_and_our_own_is_renewed() {
        let now = Instant::now();
        let mut seen = Observation::default();
        assert_eq!(
            decide_at(&Record::default(), &mut seen, now),
            Decision::TakeOver
        );
        assert_eq!(
            decide_at(&held_by("me", "t1"), &mut seen, now),
            Decision::Renew
        );
    }

    #[test]
    fn another_holder_is_waited_out_for_a_lease_duration_of_local_time() {
        let start = Instant::now();
        let mut seen = Observation::default();
        let other = held_by("other", "t1");
        assert_eq!(decide_at(&other, &mut seen, start), Decision::Wait);
        assert_eq!(
            decide_at(&other, &mut seen, start + Duration::from_secs(14)),
            Decision::Wait
        );
        assert_eq!(
            decide_at(&other, &mut seen, start + Duration::from_secs(15)),
            Decision::TakeOver
        );
    }

    #[test]
    fn a_candidate_tries_again_when_the_lease_it_waits_for_expires() {
        let start = Instant::now();
        let retry = Duration::from_secs(2);
        let mut seen = Observation::default();
        assert_eq!(seen.expiry(DURATION), None, "nothing seen yet");
        assert_eq!(next_attempt_in(None, start, retry), retry);
        seen.see(&held_by("other", "t1"), start);
        let expiry = seen.expiry(DURATION).expect("held by another");
        assert_eq!(expiry, start + DURATION);
        // Far from expiry: the retry period; close to it: exactly at it; past it: now.
        assert_eq!(next_attempt_in(Some(expiry), start, retry), retry);
        let close = start + Duration::from_millis(14_500);
        assert_eq!(
            next_attempt_in(Some(expiry), close, retry),
            Duration::from_millis(500)
        );
        assert_eq!(
            next_attempt_in(Some(expiry), start + DURATION * 2, retry),
            Duration::ZERO
        );
        // Seeing the same record again keeps its clock; a renewal restarts it.
        seen.see(&held_by("other", "t1"), start + Duration::from_secs(5));
        assert_eq!(seen.expiry(DURATION), Some(expiry));
        let renewed = start + Duration::from_secs(6);
        seen.see(&held_by("other", "t2"), renewed);
        assert_eq!(seen.expiry(DURATION), Some(renewed + DURATION));
        seen.see(&Record::default(), renewed);
        assert_eq!(seen.expiry(DURATION), None, "a free lease is taken at once");
    }

    #[test]
    fn a_renewal_restarts_the_wait() {
        let start = Instant::now();
        let mut seen = Observation::default();
        decide_at(&held_by("other", "t1"), &mut seen, start);
        let renewed = held_by("other", "t2");
        let later = start + Duration::from_secs(10);
        assert_eq!(decide_at(&renewed, &mut seen, later), Decision::Wait);
        assert_eq!(
            decide_at(&renewed, &mut seen, later + Duration::from_secs(14)),
            Decision::Wait
        );
        assert_eq!(
            decide_at(&renewed, &mut seen, later + Duration::from_secs(15)),
            Decision::TakeOver
        );
    }
}
