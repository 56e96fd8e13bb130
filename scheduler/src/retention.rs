//! Retention (`mnbackup forget`): which snapshots to keep, with restic `forget`
//! semantics.
//!
//! Snapshots are sorted newest first. Each bucket (`last`, `hourly`, `daily`, `weekly`,
//! `monthly`, `yearly`) with a count N walks the list and keeps a snapshot whenever its
//! period (hour / day / ISO week / month / year, in the given time zone) differs from the
//! previously kept one's, until N snapshots were kept by that bucket — i.e. the newest
//! snapshot of each of the N most recent periods that have a snapshot. `last` keeps the
//! N newest snapshots. A snapshot is kept if any bucket keeps it; the reasons list all of
//! them. Like restic ≥ 0.16, if a bucket still has counts left when the oldest snapshot
//! is reached, the oldest snapshot is kept too (reason `oldest …`), to maximise history.
//!
//! Safety: an empty policy (all counts `None` or 0) keeps **everything** (reason
//! [`KeepReason::EmptyPolicy`]); a non-empty policy always keeps at least the newest
//! snapshot. Grouping (per host, per pool) is the caller's job: apply the policy to each
//! group separately.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::TzSpec;

/// How many snapshots of each kind to keep. `None` or `Some(0)` disables that bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeepPolicy {
    /// Keep the N newest snapshots.
    pub last: Option<u32>,
    /// Keep the newest snapshot of each of the N most recent hours with a snapshot.
    pub hourly: Option<u32>,
    /// ... days.
    pub daily: Option<u32>,
    /// ... ISO weeks (Monday to Sunday).
    pub weekly: Option<u32>,
    /// ... months.
    pub monthly: Option<u32>,
    /// ... years.
    pub yearly: Option<u32>,
}

impl KeepPolicy {
    /// True if no bucket has a positive count (such a policy keeps everything).
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, n)| *n == 0)
    }

    fn counts(&self) -> [(KeepReason, u32); 6] {
        [
            (KeepReason::Last, self.last.unwrap_or(0)),
            (KeepReason::Hourly, self.hourly.unwrap_or(0)),
            (KeepReason::Daily, self.daily.unwrap_or(0)),
            (KeepReason::Weekly, self.weekly.unwrap_or(0)),
            (KeepReason::Monthly, self.monthly.unwrap_or(0)),
            (KeepReason::Yearly, self.yearly.unwrap_or(0)),
        ]
    }
}

impl std::fmt::Display for KeepPolicy {
    /// e.g. `keep 7 daily, 4 weekly snapshots`, or `keep everything (empty policy)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("keep everything (empty policy)");
        }
        let parts: Vec<String> = self
            .counts()
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{n} {}", r.label()))
            .collect();
        write!(f, "keep {} snapshots", parts.join(", "))
    }
}

/// Why a snapshot is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// One of the `last` N.
    Last,
    /// Newest of its hour.
    Hourly,
    /// Newest of its day.
    Daily,
    /// Newest of its ISO week.
    Weekly,
    /// Newest of its month.
    Monthly,
    /// Newest of its year.
    Yearly,
    /// Oldest snapshot kept because this bucket had counts left.
    OldestLast,
    /// See [`KeepReason::OldestLast`].
    OldestHourly,
    /// See [`KeepReason::OldestLast`].
    OldestDaily,
    /// See [`KeepReason::OldestLast`].
    OldestWeekly,
    /// See [`KeepReason::OldestLast`].
    OldestMonthly,
    /// See [`KeepReason::OldestLast`].
    OldestYearly,
    /// The policy is empty, so everything is kept.
    EmptyPolicy,
}

impl KeepReason {
    /// Text like restic's: `daily`, `oldest weekly`, `policy is empty`.
    pub fn label(&self) -> &'static str {
        match self {
            KeepReason::Last => "last",
            KeepReason::Hourly => "hourly",
            KeepReason::Daily => "daily",
            KeepReason::Weekly => "weekly",
            KeepReason::Monthly => "monthly",
            KeepReason::Yearly => "yearly",
            KeepReason::OldestLast => "oldest last",
            KeepReason::OldestHourly => "oldest hourly",
            KeepReason::OldestDaily => "oldest daily",
            KeepReason::OldestWeekly => "oldest weekly",
            KeepReason::OldestMonthly => "oldest monthly",
            KeepReason::OldestYearly => "oldest yearly",
            KeepReason::EmptyPolicy => "policy is empty",
        }
    }

    fn oldest(self) -> Self {
        match self {
            KeepReason::Last => KeepReason::OldestLast,
            KeepReason::Hourly => KeepReason::OldestHourly,
            KeepReason::Daily => KeepReason::OldestDaily,
            KeepReason::Weekly => KeepReason::OldestWeekly,
            KeepReason::Monthly => KeepReason::OldestMonthly,
            KeepReason::Yearly => KeepReason::OldestYearly,
            other => other,
        }
    }
}

/// A snapshot to evaluate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRef {
    /// Snapshot id.
    pub id: String,
    /// When it was taken.
    pub time: DateTime<Utc>,
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Snapshot id.
    pub id: String,
    /// Snapshot time.
    pub time: DateTime<Utc>,
    /// Why it is kept (empty for removed snapshots).
    pub reasons: Vec<KeepReason>,
}

/// Result of [`apply_policy`]; both lists newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForgetPlan {
    /// Snapshots to keep, with reasons.
    pub keep: Vec<Decision>,
    /// Snapshots to remove.
    pub remove: Vec<Decision>,
}

/// Evaluates `policy` over `snapshots` (any order), bucketing times in `tz`.
pub fn apply_policy(snapshots: &[SnapshotRef], policy: &KeepPolicy, tz: &TzSpec) -> ForgetPlan {
    let mut list: Vec<&SnapshotRef> = snapshots.iter().collect();
    list.sort_by_key(|s| std::cmp::Reverse(s.time)); // stable: ties keep input order
    let mut plan = ForgetPlan::default();
    if policy.is_empty() {
        plan.keep = list
            .iter()
            .map(|s| Decision {
                id: s.id.clone(),
                time: s.time,
                reasons: vec![KeepReason::EmptyPolicy],
            })
            .collect();
        return plan;
    }
    let mut buckets: Vec<(KeepReason, u32, Option<i64>)> = policy
        .counts()
        .iter()
        .map(|(r, n)| (*r, *n, None))
        .collect();
    let n = list.len();
    for (nr, snap) in list.iter().enumerate() {
        let local = tz.to_local(snap.time);
        let (y, mo, d, h) = (
            i64::from(local.year()),
            i64::from(local.month()),
            i64::from(local.day()),
            i64::from(local.hour()),
        );
        let mut reasons = vec![];
        for (reason, count, last) in buckets.iter_mut() {
            if *count == 0 {
                continue;
            }
            let val = match reason {
                KeepReason::Last => nr as i64,
                KeepReason::Hourly => y * 1_000_000 + mo * 10_000 + d * 100 + h,
                KeepReason::Daily => y * 10_000 + mo * 100 + d,
                KeepReason::Weekly => {
                    let w = local.iso_week();
                    i64::from(w.year()) * 100 + i64::from(w.week())
                }
                KeepReason::Monthly => y * 100 + mo,
                _ => y,
            };
            let is_oldest = nr == n - 1;
            if Some(val) != *last || is_oldest {
                reasons.push(if Some(val) == *last {
                    reason.oldest()
                } else {
                    *reason
                });
                *last = Some(val);
                *count -= 1;
            }
        }
        let dec = Decision {
            id: snap.id.clone(),
            time: snap.time,
            reasons,
        };
        if dec.reasons.is_empty() {
            plan.remove.push(dec);
        } else {
            plan.keep.push(dec);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDateTime, TimeZone};

    fn snaps(times: &[&str]) -> Vec<SnapshotRef> {
        times
            .iter()
            .map(|t| SnapshotRef {
                id: t.to_string(),
                time: Utc.from_utc_datetime(
                    &NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M").unwrap(),
                ),
            })
            .collect()
    }

    fn kept(plan: &ForgetPlan) -> Vec<&str> {
        plan.keep.iter().map(|d| d.id.as_str()).collect()
    }

    fn utc() -> TzSpec {
        TzSpec::parse("UTC").unwrap()
    }

    /// Twice-daily snapshots (00:00, 12:00) for 2026-01-01 .. 2026-03-31.
    fn twice_daily() -> Vec<SnapshotRef> {
        let mut v = vec![];
        let mut t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        while t < Utc.with_ymd_and_hms(2026, 4, 1, 0, 0, 0).unwrap() {
            v.push(SnapshotRef {
                id: t.format("%Y-%m-%d %H:%M").to_string(),
                time: t,
            });
            t += chrono::Duration::hours(12);
        }
        v
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            policy: KeepPolicy,
            times: Vec<SnapshotRef>,
            keep: Vec<&'static str>,
        }
        let p = |last, hourly, daily, weekly, monthly, yearly| KeepPolicy {
            last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
        };
        let few = snaps(&[
            "2026-01-01 00:00",
            "2026-01-01 12:00",
            "2026-01-02 00:00",
            "2026-01-02 12:00",
            "2026-01-03 00:00",
        ]);
        let cases = vec![
            Case {
                name: "last 2",
                policy: p(Some(2), None, None, None, None, None),
                times: few.clone(),
                keep: vec!["2026-01-03 00:00", "2026-01-02 12:00"],
            },
            Case {
                name: "daily 2 keeps newest per day",
                policy: p(None, None, Some(2), None, None, None),
                times: few.clone(),
                keep: vec!["2026-01-03 00:00", "2026-01-02 12:00"],
            },
            Case {
                name: "daily 10 with only 3 days: all days + oldest",
                policy: p(None, None, Some(10), None, None, None),
                times: few.clone(),
                keep: vec![
                    "2026-01-03 00:00",
                    "2026-01-02 12:00",
                    "2026-01-01 12:00",
                    "2026-01-01 00:00",
                ],
            },
            Case {
                name: "zero counts = empty policy keeps all",
                policy: p(Some(0), None, Some(0), None, None, None),
                times: few.clone(),
                keep: vec![
                    "2026-01-03 00:00",
                    "2026-01-02 12:00",
                    "2026-01-02 00:00",
                    "2026-01-01 12:00",
                    "2026-01-01 00:00",
                ],
            },
            Case {
                name: "hourly 3",
                policy: p(None, Some(3), None, None, None, None),
                times: snaps(&[
                    "2026-01-01 10:05",
                    "2026-01-01 10:35",
                    "2026-01-01 11:05",
                    "2026-01-01 11:35",
                    "2026-01-01 13:00",
                ]),
                keep: vec!["2026-01-01 13:00", "2026-01-01 11:35", "2026-01-01 10:35"],
            },
            Case {
                // 2026-01-04 is a Sunday (ISO week 1 of 2026 is Dec 29 - Jan 4).
                name: "weekly 2 uses ISO weeks",
                policy: p(None, None, None, Some(2), None, None),
                times: snaps(&[
                    "2025-12-29 00:00",
                    "2026-01-04 23:00",
                    "2026-01-05 00:00",
                    "2026-01-11 12:00",
                    "2026-01-12 00:00",
                ]),
                keep: vec!["2026-01-12 00:00", "2026-01-11 12:00"],
            },
            Case {
                name: "monthly 2 + yearly 5 over year boundary",
                policy: p(None, None, None, None, Some(2), Some(5)),
                times: snaps(&[
                    "2025-11-15 00:00",
                    "2025-12-01 00:00",
                    "2025-12-31 12:00",
                    "2026-01-10 00:00",
                ]),
                // monthly: 2026-01, 2025-12 (newest = 12-31); yearly: 2026, 2025 (12-31),
                // and the oldest snapshot since yearly still had counts left.
                keep: vec!["2026-01-10 00:00", "2025-12-31 12:00", "2025-11-15 00:00"],
            },
            Case {
                name: "last 1 + daily 2: buckets overlap",
                policy: p(Some(1), None, Some(2), None, None, None),
                times: few.clone(),
                keep: vec!["2026-01-03 00:00", "2026-01-02 12:00"],
            },
            Case {
                name: "empty input",
                policy: p(Some(3), None, None, None, None, None),
                times: vec![],
                keep: vec![],
            },
        ];
        for c in cases {
            let plan = apply_policy(&c.times, &c.policy, &utc());
            assert_eq!(kept(&plan), c.keep, "case {}", c.name);
            assert_eq!(
                plan.keep.len() + plan.remove.len(),
                c.times.len(),
                "case {}",
                c.name
            );
        }
    }

    #[test]
    fn realistic_policy_over_three_months() {
        let policy = KeepPolicy {
            last: Some(4),
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(6),
            ..Default::default()
        };
        let plan = apply_policy(&twice_daily(), &policy, &utc());
        let k = kept(&plan);
        assert_eq!(
            k,
            vec![
                "2026-03-31 12:00", // last, daily, weekly, monthly
                "2026-03-31 00:00", // last
                "2026-03-30 12:00", // last, daily
                "2026-03-30 00:00", // last
                "2026-03-29 12:00", // daily, weekly (ISO week ending Sun 03-29)
                "2026-03-28 12:00",
                "2026-03-27 12:00",
                "2026-03-26 12:00",
                "2026-03-25 12:00", // 7th daily
                "2026-03-22 12:00", // weekly
                "2026-03-15 12:00", // weekly (4th)
                "2026-02-28 12:00", // monthly
                "2026-01-31 12:00", // monthly
                "2026-01-01 00:00", // oldest monthly (counts left)
            ]
        );
        let first = &plan.keep[0];
        assert_eq!(
            first.reasons,
            vec![
                KeepReason::Last,
                KeepReason::Daily,
                KeepReason::Weekly,
                KeepReason::Monthly
            ]
        );
        assert_eq!(
            plan.keep.last().unwrap().reasons,
            vec![KeepReason::OldestMonthly]
        );
        assert_eq!(plan.keep.len() + plan.remove.len(), 180);
    }

    #[test]
    fn oldest_reason_when_same_period() {
        // Both on the same day; daily 5 keeps the newest as "daily" and the oldest as
        // "oldest daily".
        let plan = apply_policy(
            &snaps(&["2026-01-01 00:00", "2026-01-01 12:00"]),
            &KeepPolicy {
                daily: Some(5),
                ..Default::default()
            },
            &utc(),
        );
        assert_eq!(plan.keep[0].reasons, vec![KeepReason::Daily]);
        assert_eq!(plan.keep[1].reasons, vec![KeepReason::OldestDaily]);
        assert_eq!(plan.keep[1].reasons[0].label(), "oldest daily");
    }

    #[test]
    fn time_zone_changes_day_buckets() {
        // Asia/Shanghai is UTC+8: 15:00Z is 23:00 on 01-01 there, 17:00Z and 23:00Z are
        // on 01-02. In UTC all four 01-01 snapshots are the same day.
        let s = snaps(&[
            "2025-12-31 10:00",
            "2026-01-01 10:00",
            "2026-01-01 15:00",
            "2026-01-01 17:00",
            "2026-01-01 23:00",
        ]);
        let policy = KeepPolicy {
            daily: Some(2),
            ..Default::default()
        };
        let in_utc = apply_policy(&s, &policy, &utc());
        assert_eq!(kept(&in_utc), vec!["2026-01-01 23:00", "2025-12-31 10:00"]);
        let sh = apply_policy(&s, &policy, &TzSpec::parse("Asia/Shanghai").unwrap());
        assert_eq!(kept(&sh), vec!["2026-01-01 23:00", "2026-01-01 15:00"]);
    }

    #[test]
    fn empty_policy_never_deletes_and_display() {
        let plan = apply_policy(&twice_daily(), &KeepPolicy::default(), &utc());
        assert!(plan.remove.is_empty());
        assert_eq!(plan.keep.len(), 180);
        assert_eq!(plan.keep[0].reasons, vec![KeepReason::EmptyPolicy]);
        assert_eq!(
            KeepPolicy::default().to_string(),
            "keep everything (empty policy)"
        );
        let p = KeepPolicy {
            daily: Some(7),
            weekly: Some(4),
            ..Default::default()
        };
        assert_eq!(p.to_string(), "keep 7 daily, 4 weekly snapshots");
        // Non-empty policy always keeps the newest.
        let plan = apply_policy(
            &twice_daily(),
            &KeepPolicy {
                yearly: Some(1),
                ..Default::default()
            },
            &utc(),
        );
        assert_eq!(kept(&plan), vec!["2026-03-31 12:00"]);
    }
}
