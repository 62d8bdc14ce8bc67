//! `--log-format json`: one JSON object per line on stderr, with stable field names.
//!
//! ```text
//! {"ts":"2026-12-05T21:40:01.123Z","level":"INFO","target":"shardlog_net::server::cluster::controller",
//!  "msg":"leader changed","node":0,"shard":0,"topic":"t","partition":0,"epoch":3,"leader":1}
//! ```
//!
//! `ts` (UTC, RFC 3339, milliseconds), `level` (`ERROR` .. `TRACE`), `target` (the module)
//! and `msg` come first, always; then the fields of the event's spans from the outermost to
//! the innermost (the per-shard span gives `node` and `shard`), then the event's own fields
//! (`topic`, `partition`, `epoch`, `offset`, `peer`, `error`, ...), in the order written. A
//! field named again further in wins (an event's `node` over its span's). A field that
//! would shadow one of the first four is written as `field.<name>`. Numbers and booleans
//! stay JSON numbers and booleans; everything else (`%display`, `?debug`) is a string.
//!
//! Each line is written with one `write_all` on a locked stderr, so the shards' lines never
//! interleave. Logging is off the data path: a line allocates.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The names every line starts with; a field of the same name is renamed.
const RESERVED: [&str; 4] = ["ts", "level", "target", "msg"];

/// The tracing layer that writes JSON lines to stderr.
#[derive(Debug, Default)]
pub struct JsonLayer;

/// A span's fields, kept in its extensions: (name, JSON value) in the order recorded.
struct SpanFields(Vec<(&'static str, String)>);

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.pairs));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        values.record(&mut fields);
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(pairs)) = extensions.get_mut::<SpanFields>() {
            pairs.extend(fields.pairs);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut pairs = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    pairs.extend(fields.iter().cloned());
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        pairs.extend(fields.pairs);
        let meta = event.metadata();
        let line = line(
            SystemTime::now(),
            *meta.level(),
            meta.target(),
            &fields.message,
            &pairs,
        );
        write_stderr(&line);
    }
}

/// Writes one whole line to stderr. A line that cannot be written is lost, not the server.
pub fn write_stderr(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// One JSON line (with its `\n`): the four fixed members, then `pairs` (values already
/// JSON), a later pair of the same name replacing an earlier one in place.
#[must_use]
pub fn line(
    now: SystemTime,
    level: Level,
    target: &str,
    message: &str,
    pairs: &[(&'static str, String)],
) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"ts\":");
    push_json_string(&mut out, &timestamp(now));
    out.push_str(",\"level\":");
    push_json_string(&mut out, level.as_str());
    out.push_str(",\"target\":");
    push_json_string(&mut out, target);
    out.push_str(",\"msg\":");
    push_json_string(&mut out, message);
    for (i, (name, value)) in pairs.iter().enumerate() {
        if pairs[i + 1..].iter().any(|(later, _)| later == name) {
            continue;
        }
        out.push(',');
        if RESERVED.contains(name) {
            push_json_string(&mut out, &format!("field.{name}"));
        } else {
            push_json_string(&mut out, name);
        }
        out.push(':');
        out.push_str(value);
    }
    out.push_str("}\n");
    out
}

/// An event's or span's fields as JSON values; `message` apart.
#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(&'static str, String)>,
}

impl Fields {
    fn push_string(&mut self, field: &Field, text: &str) {
        if field.name() == "message" {
            text.clone_into(&mut self.message);
            return;
        }
        let mut value = String::with_capacity(text.len() + 2);
        push_json_string(&mut value, text);
        self.pairs.push((field.name(), value));
    }

    fn push_raw(&mut self, field: &Field, value: String) {
        self.pairs.push((field.name(), value));
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push_string(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push_string(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push_string(field, &value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push_raw(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push_raw(field, value.to_string());
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.push_raw(field, value.to_string());
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.push_raw(field, value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push_raw(field, value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: those go as strings.
        if value.is_finite() {
            self.push_raw(field, value.to_string());
        } else {
            self.push_string(field, &value.to_string());
        }
    }
}

/// Appends `text` as a JSON string (quoted, escaped per RFC 8259).
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `now` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC). Before 1970 (a broken clock): the epoch.
#[must_use]
pub fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let (year, month, day) = civil_from_days(days);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// (year, month, day) of the day `days` after 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are small by construction: day 1..=31, month 1..=12.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339_with_milliseconds() {
        let at = |secs: u64, ms: u64| {
            timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_796_506_496, 999), "2026-12-05T21:34:56.999Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000Z");
    }

    #[test]
    fn lines_parse_with_fixed_members_first_and_later_fields_winning() {
        let pairs = [
            ("node", "0".to_owned()),
            ("shard", "1".to_owned()),
            ("node", "2".to_owned()),
            ("msg", "\"shadow\"".to_owned()),
            ("topic", "\"a \\\"b\\\"\\n\"".to_owned()),
        ];
        let text = line(UNIX_EPOCH, Level::WARN, "t::m", "say \"hi\"\n\u{1}", &pairs);
        assert!(text.ends_with("}\n"));
        assert!(text.starts_with("{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"WARN\""));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["target"], "t::m");
        assert_eq!(value["msg"], "say \"hi\"\n\u{1}");
        assert_eq!(value["node"], 2);
        assert_eq!(value["shard"], 1);
        assert_eq!(value["field.msg"], "shadow");
        assert_eq!(value["topic"], "a \"b\"\n");
        assert_eq!(text.matches("\"node\"").count(), 1, "{text}");
    }
}
