//! What a file is, as the message says it: its kind (file, photo, video, voice note, sticker),
//! its MIME type, and for pictures their size and a small thumbnail, all made on the sender's
//! device and carried only inside the encrypted message.

use std::path::Path;

use chapar_wire::content::FileKind;

/// Longest side of a thumbnail, in pixels.
const THUMBNAIL_SIDE_PX: u32 = 320;
/// JPEG quality of thumbnails (they are previews, and travel inside a message).
const THUMBNAIL_JPEG_QUALITY: u8 = 70;
/// Largest thumbnail kept, in bytes; bigger ones are dropped (the message would grow too big).
pub const THUMBNAIL_BYTES_MAX: usize = 64 * 1024;
/// Largest picture decoded for a thumbnail, in bytes; bigger pictures go without one.
const THUMBNAIL_SOURCE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Widest or tallest picture decoded for a thumbnail, in pixels.
const THUMBNAIL_SOURCE_SIDE_PX_MAX: u32 = 16_384;
/// Most memory decoding one picture may take.
const THUMBNAIL_DECODE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// The extension of `path`, lowercase.
fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The MIME type a file name suggests (`application/octet-stream` when unknown).
pub fn mime_type(path: &Path) -> &'static str {
    match extension(path).as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "m4a" => "audio/mp4",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// The kind a file's type suggests, when the sender does not say.
pub fn guess_kind(path: &Path) -> FileKind {
    let mime = mime_type(path);
    if mime.starts_with("image/") {
        FileKind::Photo
    } else if mime.starts_with("video/") {
        FileKind::Video
    } else if mime.starts_with("audio/") {
        FileKind::Voice
    } else {
        FileKind::File
    }
}

/// Parses a kind as users type it.
pub fn parse_kind(text: &str) -> Option<FileKind> {
    match text {
        "file" => Some(FileKind::File),
        "photo" => Some(FileKind::Photo),
        "video" => Some(FileKind::Video),
        "voice" => Some(FileKind::Voice),
        "sticker" => Some(FileKind::Sticker),
        _ => None,
    }
}

/// How a kind is named in output.
pub fn kind_name(kind: i32) -> &'static str {
    match FileKind::try_from(kind) {
        Ok(FileKind::Photo) => "photo",
        Ok(FileKind::Video) => "video",
        Ok(FileKind::Voice) => "voice",
        Ok(FileKind::Sticker) => "sticker",
        _ => "file",
    }
}

/// A picture's size and a small JPEG thumbnail of it.
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The thumbnail (at most [`THUMBNAIL_BYTES_MAX`]; empty if it would be bigger).
    pub thumbnail: Vec<u8>,
}

/// Reads a picture's size and makes its thumbnail; None if the file is not a picture this
/// build can decode, or is too big to decode for a preview.
pub fn picture(path: &Path) -> Option<Picture> {
    let size = std::fs::metadata(path).ok()?.len();
    if size > THUMBNAIL_SOURCE_BYTES_MAX {
        return None;
    }
    let mut reader = image::ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(THUMBNAIL_SOURCE_SIDE_PX_MAX);
    limits.max_image_height = Some(THUMBNAIL_SOURCE_SIDE_PX_MAX);
    limits.max_alloc = Some(THUMBNAIL_DECODE_BYTES_MAX);
    reader.limits(limits);
    let image = reader.decode().ok()?;
    let (width, height) = (image.width(), image.height());
    let small = image
        .thumbnail(THUMBNAIL_SIDE_PX, THUMBNAIL_SIDE_PX)
        .to_rgb8();
    let mut thumbnail = Vec::new();
    let encoder =
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut thumbnail, THUMBNAIL_JPEG_QUALITY);
    small.write_with_encoder(encoder).ok()?;
    if thumbnail.len() > THUMBNAIL_BYTES_MAX {
        thumbnail.clear();
    }
    Some(Picture {
        width,
        height,
        thumbnail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_extension_and_unknown_is_a_file() {
        assert_eq!(guess_kind(Path::new("a/b/holiday.JPG")), FileKind::Photo);
        assert_eq!(guess_kind(Path::new("clip.webm")), FileKind::Video);
        assert_eq!(guess_kind(Path::new("note.opus")), FileKind::Voice);
        assert_eq!(guess_kind(Path::new("thesis.tex")), FileKind::File);
        assert_eq!(guess_kind(Path::new("no-extension")), FileKind::File);
        assert_eq!(parse_kind("voice"), Some(FileKind::Voice));
        assert_eq!(parse_kind("gif"), None);
    }

    #[test]
    fn pictures_get_a_small_thumbnail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.png");
        let image = image::RgbImage::from_fn(1600, 900, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        image.save(&path).expect("save");
        let picture = picture(&path).expect("decodes");
        assert_eq!((picture.width, picture.height), (1600, 900));
        assert!(!picture.thumbnail.is_empty() && picture.thumbnail.len() < THUMBNAIL_BYTES_MAX);
        let thumb = image::load_from_memory(&picture.thumbnail).expect("a JPEG");
        assert_eq!(thumb.width(), THUMBNAIL_SIDE_PX);
        let not_a_picture = dir.path().join("x.png");
        std::fs::write(&not_a_picture, b"not a png").expect("write");
        assert!(super::picture(&not_a_picture).is_none());
    }
}
