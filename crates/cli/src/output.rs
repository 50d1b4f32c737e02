//! How messages are printed: a readable line, or one JSON object per line for scripts.

use std::io::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use chapar_client::files::media::kind_name;
use chapar_client::{ChatKind, ChatMessage, Engine};
use chapar_types::GroupId;

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

/// How a chat is named in commands and output: `@peer` for a direct chat, else its id.
pub fn label(chat: &chapar_client::Chat) -> String {
    match (&chat.kind, &chat.peer) {
        (ChatKind::Direct, Some(peer)) => format!("@{peer}"),
        _ => chat.group.to_string(),
    }
}

/// The label of chat `group` on this device.
pub fn chat_label(engine: &Engine, group: GroupId) -> String {
    match engine.chat(group) {
        Ok(Some(chat)) => label(&chat),
        _ => group.to_string(),
    }
}

/// Prints one message and flushes, so `listen` output reaches pipes at once.
pub fn print_message(engine: &Engine, m: &ChatMessage, json: bool) {
    let chat = chat_label(engine, m.chat);
    let id = m.id.to_string();
    let line = if json {
        let reactions: Vec<_> = m
            .reactions
            .iter()
            .map(|(emoji, by)| serde_json::json!({"emoji": emoji, "by": format!("@{by}")}))
            .collect();
        let mut line = serde_json::json!({
            "chat": chat,
            "id": id,
            "sender": format!("@{}", m.sender),
            "text": m.text,
            "sent_at": rfc3339(m.sent_at_ms),
            "reply_to": m.reply_to.map(|r| r.to_string()),
            "edited": m.edited,
            "deleted": m.deleted,
            "reactions": reactions,
        });
        if let Some(object) = line.as_object_mut() {
            if let Some(file) = &m.file {
                let mut value = serde_json::json!({
                    "name": file.name,
                    "size": file.size,
                    "kind": kind_name(file.kind as i32),
                    "mime_type": file.mime_type,
                    "thumbnail": file.thumbnail,
                });
                if let Some(fields) = value.as_object_mut() {
                    if let Some(width) = file.width {
                        fields.insert("width".into(), width.into());
                    }
                    if let Some(height) = file.height {
                        fields.insert("height".into(), height.into());
                    }
                }
                object.insert("file".into(), value);
            }
            if let Some(pack) = &m.sticker_pack {
                object.insert(
                    "sticker_pack".into(),
                    serde_json::json!({
                        "id": hex::encode(pack.id),
                        "name": pack.name,
                        "stickers": pack.stickers,
                    }),
                );
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
            .map(|(e, by)| format!(" [{} @{by}]", printable(e, false)))
            .collect();
        if let Some(file) = &m.file {
            flags.insert_str(
                0,
                &format!(
                    " [{}: {}, {} bytes]",
                    kind_name(file.kind as i32),
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
                    hex::encode(pack.id),
                    pack.stickers
                ),
            );
        }
        format!(
            "[{chat}] {} @{}: {}{flags}{reactions}  ({})",
            rfc3339(m.sent_at_ms),
            m.sender,
            printable(&m.text, true),
            &id[..8]
        )
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
