//! How messages are printed: a readable line, or one JSON object per line for scripts.

use std::io::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use chapar_client::ChatMessage;

/// RFC 3339 (UTC, seconds) of a Unix time in milliseconds.
pub fn rfc3339(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// `text` without terminal control sequences (a sender could otherwise rewrite the user's
/// screen); line breaks stay where `keep_lines`.
pub fn printable(text: &str, keep_lines: bool) -> String {
    text.chars()
        .filter(|c| !c.is_control() || (keep_lines && matches!(c, '\n' | '\t')))
        .collect()
}

/// Prints one message and flushes, so `listen` output reaches pipes at once.
pub fn print_message(m: &ChatMessage, json: bool) {
    let line = if json {
        let reactions: Vec<_> = m
            .reactions
            .iter()
            .map(|(emoji, by)| serde_json::json!({"emoji": emoji, "by": by}))
            .collect();
        let mut line = serde_json::json!({
            "chat": m.chat,
            "id": m.id,
            "sender": m.sender,
            "text": m.text,
            "sent_at": rfc3339(m.sent_at_ms),
            "reply_to": m.reply_to,
            "edited": m.edited,
            "deleted": m.deleted,
            "reactions": reactions,
        });
        if let Some(object) = line.as_object_mut() {
            if let Some(file) = &m.file {
                object.insert("file".into(), serde_json::json!(file));
            }
            if let Some(pack) = &m.sticker_pack {
                object.insert("sticker_pack".into(), serde_json::json!(pack));
            }
        }
        line.to_string()
    } else {
        let mut flags = String::new();
        if m.deleted {
            flags.push_str(" (deleted)");
        } else if m.edited {
            flags.push_str(" (edited)");
        }
        let reactions: String = m
            .reactions
            .iter()
            .map(|(e, by)| format!(" [{} {by}]", printable(e, false)))
            .collect();
        if let Some(file) = &m.file {
            flags.insert_str(
                0,
                &format!(
                    " [{}: {}, {} bytes]",
                    file.kind,
                    printable(&file.name, false),
                    file.size
                ),
            );
        }
        if let Some(pack) = &m.sticker_pack {
            flags.insert_str(
                0,
                &format!(
                    " [sticker pack {} ({}), {} stickers]",
                    printable(&pack.name, false),
                    pack.id,
                    pack.stickers
                ),
            );
        }
        format!(
            "[{}] {} {}: {}{flags}{reactions}  ({})",
            m.chat,
            rfc3339(m.sent_at_ms),
            m.sender,
            printable(&m.text, true),
            &m.id[..8]
        )
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
