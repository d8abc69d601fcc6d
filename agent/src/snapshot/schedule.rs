//! The `snapshot.schedule` setting: a 5-field cron expression in UTC (parsed by `croner`),
//! `@every <duration>` for short, epoch-aligned periods (tests, small setups), or "" to turn
//! snapshots off.

use std::time::Duration;

use croner::parser::{CronParser, Seconds};

use crate::jobs::Schedule;

/// The default schedule: every six hours, on the hour (UTC).
pub const DEFAULT_SCHEDULE: &str = "0 */6 * * *";

/// A schedule setting that does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// `@every` with a bad duration.
    #[error("\"@every {given}\" is not a duration ({reason}): write e.g. \"@every 30s\" or \"@every 1h\"")]
    BadEvery {
        /// What followed `@every`.
        given: String,
        /// Why it is not a duration.
        reason: String,
    },
    /// `@every` with a period under one second.
    #[error("\"@every {given}\" is shorter than one second: slots are whole seconds, use at least \"@every 1s\"")]
    TooShort {
        /// What followed `@every`.
        given: String,
    },
    /// A cron expression that does not parse.
    #[error("{given:?} is not a 5-field cron expression ({reason}): write minute hour day-of-month month day-of-week in UTC, e.g. \"0 */6 * * *\", or \"@every 30s\", or \"\" to turn snapshots off")]
    BadCron {
        /// The expression.
        given: String,
        /// croner's reason.
        reason: String,
    },
}

/// Reads a schedule setting; `Ok(None)` for "" (snapshots off).
pub fn parse(text: &str) -> Result<Option<Schedule>, ScheduleError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(rest) = text.strip_prefix("@every") {
        let given = rest.trim().to_owned();
        let period: Duration =
            humantime::parse_duration(&given).map_err(|e| ScheduleError::BadEvery {
                given: given.clone(),
                reason: e.to_string(),
            })?;
        if period.as_secs() == 0 {
            return Err(ScheduleError::TooShort { given });
        }
        return Ok(Some(Schedule::Every(period)));
    }
    let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
    let cron = parser.parse(text).map_err(|e| ScheduleError::BadCron {
        given: text.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Some(Schedule::Cron(Box::new(cron))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn empty_is_off() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("  "), Ok(None));
    }

    #[test]
    fn every_takes_a_humantime_duration() {
        assert_eq!(
            parse("@every 30s"),
            Ok(Some(Schedule::Every(Duration::from_secs(30))))
        );
        assert_eq!(
            parse("@every 1h 30m"),
            Ok(Some(Schedule::Every(Duration::from_secs(5400))))
        );
        assert!(matches!(
            parse("@every soon"),
            Err(ScheduleError::BadEvery { .. })
        ));
        assert!(matches!(
            parse("@every"),
            Err(ScheduleError::BadEvery { .. })
        ));
        assert_eq!(
            parse("@every 500ms"),
            Err(ScheduleError::TooShort {
                given: "500ms".into()
            })
        );
    }

    #[test]
    fn the_default_is_every_six_hours_utc() {
        let s = parse(DEFAULT_SCHEDULE).unwrap().unwrap();
        // 2023-11-14T22:13:20Z falls in the 18:00 slot.
        assert_eq!(s.slot_at(at(1_700_000_000)), Some(1_699_984_800));
        assert_eq!(
            s.period(at(1_700_000_000)),
            Some(Duration::from_secs(6 * 3600))
        );
    }

    #[test]
    fn bad_cron_names_the_form_and_the_fix() {
        for bad in ["0 */6 * *", "61 * * * *", "0 0 */6 * * *", "every day"] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, ScheduleError::BadCron { .. }),
                "{bad}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains("5-field cron"), "{text}");
            assert!(text.contains("@every 30s"), "{text}");
        }
    }
}
