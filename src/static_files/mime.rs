//! Content-Type from a file name's extension.
//!
//! The table covers what a web docroot holds today (markup, scripts, styles,
//! fonts, modern image, audio and video formats, WebAssembly, archives).
//! Extensions compare ASCII case-insensitively; a name without an extension,
//! a dot-file such as `.htaccess`, or an unknown extension gets
//! `application/octet-stream`, so a browser downloads rather than sniffs it.
//! Textual types carry `; charset=utf-8`.
//!
//! Invariant: lookup never allocates; an extension longer than any in the
//! table is unknown without being examined further.

/// What a file of unknown type is served as.
pub const DEFAULT: &str = "application/octet-stream";

/// At least the longest extension in the table (`webmanifest`, 11).
const MAX_EXT: usize = 16;

/// The Content-Type for a file name (the last path component, as bytes).
pub fn content_type(file_name: &[u8]) -> &'static str {
    let ext = match file_name.iter().rposition(|&b| b == b'.') {
        // A leading dot names a hidden file, not an extension.
        Some(dot) if dot > 0 => &file_name[dot + 1..],
        _ => return DEFAULT,
    };
    if ext.is_empty() || ext.len() > MAX_EXT {
        return DEFAULT;
    }
    let mut lower = [0u8; MAX_EXT];
    let lower = &mut lower[..ext.len()];
    lower.copy_from_slice(ext);
    lower.make_ascii_lowercase();
    by_extension(lower).unwrap_or(DEFAULT)
}

fn by_extension(ext: &[u8]) -> Option<&'static str> {
    Some(match ext {
        // Text and markup.
        b"html" | b"htm" | b"shtml" => "text/html; charset=utf-8",
        b"css" => "text/css; charset=utf-8",
        b"js" | b"mjs" | b"cjs" => "text/javascript; charset=utf-8",
        b"txt" | b"text" | b"log" => "text/plain; charset=utf-8",
        b"csv" => "text/csv; charset=utf-8",
        b"md" | b"markdown" => "text/markdown; charset=utf-8",
        b"ics" => "text/calendar; charset=utf-8",
        b"vtt" => "text/vtt; charset=utf-8",
        b"xml" | b"xsl" => "text/xml; charset=utf-8",
        // Structured data.
        b"json" | b"map" => "application/json",
        b"jsonld" => "application/ld+json",
        b"webmanifest" => "application/manifest+json",
        b"rss" => "application/rss+xml",
        b"atom" => "application/atom+xml",
        b"xhtml" => "application/xhtml+xml",
        b"wasm" => "application/wasm",
        // Images.
        b"png" => "image/png",
        b"jpg" | b"jpeg" | b"jpe" => "image/jpeg",
        b"gif" => "image/gif",
        b"webp" => "image/webp",
        b"avif" => "image/avif",
        b"svg" | b"svgz" => "image/svg+xml",
        b"ico" => "image/x-icon",
        b"bmp" => "image/bmp",
        b"tif" | b"tiff" => "image/tiff",
        b"apng" => "image/apng",
        b"jxl" => "image/jxl",
        b"heic" => "image/heic",
        // Fonts.
        b"woff" => "font/woff",
        b"woff2" => "font/woff2",
        b"ttf" => "font/ttf",
        b"otf" => "font/otf",
        b"eot" => "application/vnd.ms-fontobject",
        // Audio and video.
        b"mp3" => "audio/mpeg",
        b"ogg" | b"oga" => "audio/ogg",
        b"opus" => "audio/opus",
        b"wav" => "audio/wav",
        b"flac" => "audio/flac",
        b"m4a" => "audio/mp4",
        b"aac" => "audio/aac",
        b"mp4" | b"m4v" => "video/mp4",
        b"webm" => "video/webm",
        b"ogv" => "video/ogg",
        b"mov" => "video/quicktime",
        b"m3u8" => "application/vnd.apple.mpegurl",
        // Documents and archives.
        b"pdf" => "application/pdf",
        b"zip" => "application/zip",
        b"gz" | b"tgz" => "application/gzip",
        b"bz2" => "application/x-bzip2",
        b"xz" => "application/x-xz",
        b"zst" => "application/zstd",
        b"tar" => "application/x-tar",
        b"7z" => "application/x-7z-compressed",
        b"rtf" => "application/rtf",
        b"epub" => "application/epub+zip",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_extension_the_issue_lists_has_a_modern_type() {
        for (name, expected) in [
            ("index.html", "text/html; charset=utf-8"),
            ("site.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("module.mjs", "text/javascript; charset=utf-8"),
            ("data.json", "application/json"),
            ("logo.svg", "image/svg+xml"),
            ("a.png", "image/png"),
            ("a.jpg", "image/jpeg"),
            ("a.jpeg", "image/jpeg"),
            ("a.gif", "image/gif"),
            ("a.webp", "image/webp"),
            ("a.avif", "image/avif"),
            ("favicon.ico", "image/x-icon"),
            ("f.woff", "font/woff"),
            ("f.woff2", "font/woff2"),
            ("m.wasm", "application/wasm"),
            ("robots.txt", "text/plain; charset=utf-8"),
            ("sitemap.xml", "text/xml; charset=utf-8"),
            ("doc.pdf", "application/pdf"),
            ("a.zip", "application/zip"),
            ("a.tar.gz", "application/gzip"),
            ("v.mp4", "video/mp4"),
            ("v.webm", "video/webm"),
            ("s.mp3", "audio/mpeg"),
            ("site.webmanifest", "application/manifest+json"),
        ] {
            assert_eq!(content_type(name.as_bytes()), expected, "{name}");
        }
    }

    #[test]
    fn extensions_compare_case_insensitively() {
        assert_eq!(content_type(b"PHOTO.JPG"), "image/jpeg");
        assert_eq!(content_type(b"Index.Html"), "text/html; charset=utf-8");
    }

    #[test]
    fn names_without_a_known_extension_are_octet_streams() {
        for name in [
            &b""[..],
            b"README",
            b".htaccess",
            b"trailing.",
            b"a.unknownext",
            b"a.averyveryverylongextension",
            b"a.\xff\xfe",
            b"a.exe",
        ] {
            assert_eq!(content_type(name), DEFAULT);
        }
    }
}
