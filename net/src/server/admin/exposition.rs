//! The Prometheus text exposition format (version 0.0.4), written by hand: a family's
//! `# HELP` and `# TYPE` lines, then its samples with escaped label values.

use std::fmt::Write;

use crate::server::metrics::LatencyHistogram;
use crate::server::metrics::histogram::BUCKETS_SECONDS;

/// The content type `/metrics` answers with.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's kind.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A page of metric families under construction.
#[derive(Default)]
pub(crate) struct Page {
    text: String,
}

impl Page {
    /// Starts a family: its help and type lines.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample of the family just started.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape(value));
            }
            self.text.push('}');
        }
        self.text.push(' ');
        write_value(&mut self.text, value);
        self.text.push('\n');
    }

    /// A one-sample family.
    pub(crate) fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram family (the caller wrote its header): `_bucket` lines, `_sum`, `_count`.
    pub(crate) fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &LatencyHistogram) {
        let bucket = format!("{name}_bucket");
        let cumulative = h.cumulative();
        for (bound, count) in BUCKETS_SECONDS.iter().zip(cumulative) {
            let le = bound.to_string();
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count as f64);
        }
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count() as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds());
        self.sample(&format!("{name}_count"), labels, h.count() as f64);
    }

    /// The page's text.
    pub(crate) fn finish(self) -> String {
        self.text
    }
}

/// A label value escaped: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_value(text: &mut String, value: f64) {
    if value.is_nan() {
        text.push_str("NaN");
    } else if value.is_infinite() {
        text.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(text, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_values_written_plainly() {
        let mut page = Page::default();
        page.family("shardlog_x", Kind::Gauge, "An x.");
        page.sample("shardlog_x", &[("topic", "a\"b\\c\nd")], 3.0);
        page.sample("shardlog_x", &[], 0.25);
        let text = page.finish();
        assert_eq!(
            text,
            "# HELP shardlog_x An x.\n# TYPE shardlog_x gauge\n\
             shardlog_x{topic=\"a\\\"b\\\\c\\nd\"} 3\nshardlog_x 0.25\n"
        );
    }
}
