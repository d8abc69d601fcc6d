//! etcd's output in the agent's log: each line of the child's stdout/stderr becomes a tracing
//! event with target `etcd` and the node name, at the level etcd's zap logger gave it, so that
//! `journalctl -u quorate` tells one story.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Level and message of one etcd log line.
#[derive(Debug, PartialEq, Eq)]
pub struct EtcdLine {
    pub level: tracing::Level,
    pub msg: String,
}

/// Parses a zap JSON line (`{"level":"warn","ts":...,"msg":"...",...}`); other lines are
/// passed through at info.
pub fn parse_line(line: &str) -> EtcdLine {
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        return EtcdLine {
            level: tracing::Level::INFO,
            msg: line.to_owned(),
        };
    };
    let level = match obj.remove("level").as_ref().and_then(|v| v.as_str()) {
        Some("debug") => tracing::Level::DEBUG,
        Some("warn") => tracing::Level::WARN,
        Some("error" | "dpanic" | "panic" | "fatal") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    let msg = obj
        .remove("msg")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    obj.remove("ts");
    obj.remove("caller");
    let rest = if obj.is_empty() {
        String::new()
    } else {
        format!(" {}", serde_json::Value::Object(obj))
    };
    EtcdLine {
        level,
        msg: format!("{msg}{rest}"),
    }
}

/// Forwards every line of `stream` to the log until it closes; returns the last error-level
/// line (or Go panic), which says why an etcd that exited did so.
pub async fn forward(stream: impl AsyncRead + Unpin, node: String) -> Option<String> {
    let mut lines = BufReader::new(stream).lines();
    let mut last_error = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let EtcdLine { level, msg } = parse_line(&line);
        if level == tracing::Level::ERROR || msg.starts_with("panic:") {
            last_error = Some(msg.chars().take(300).collect());
        }
        match level {
            tracing::Level::ERROR => tracing::error!(target: "etcd", node = %node, "{msg}"),
            tracing::Level::WARN => tracing::warn!(target: "etcd", node = %node, "{msg}"),
            tracing::Level::DEBUG => tracing::debug!(target: "etcd", node = %node, "{msg}"),
            _ => tracing::info!(target: "etcd", node = %node, "{msg}"),
        }
    }
    last_error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zap_lines_keep_level_and_fields() {
        let l = parse_line(
            r#"{"level":"warn","ts":"2026-11-21T10:00:00Z","caller":"x.go:1","msg":"slow fdatasync","took":"1.2s"}"#,
        );
        assert_eq!(l.level, tracing::Level::WARN);
        assert_eq!(l.msg, r#"slow fdatasync {"took":"1.2s"}"#);
        let l = parse_line(r#"{"level":"info","msg":"ready to serve client requests"}"#);
        assert_eq!(l.level, tracing::Level::INFO);
        assert_eq!(l.msg, "ready to serve client requests");
        let l = parse_line("plain text from an old etcd");
        assert_eq!(l.level, tracing::Level::INFO);
        assert_eq!(l.msg, "plain text from an old etcd");
    }
}
