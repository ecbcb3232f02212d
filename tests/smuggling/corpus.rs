//! Loader for the request-smuggling corpus (`corpus.txt`, next to this
//! file; its header documents the format). A plain module with no tests,
//! so that a test and a bench can both include it:
//!
//! ```ignore
//! #[path = "smuggling/corpus.rs"]
//! mod corpus;
//! let cases = corpus::load();
//! ```
//!
//! Standard library only. The text is compiled in (`include_str!`).

#![allow(dead_code)]

use std::collections::BTreeSet;

/// The corpus as committed.
pub const TEXT: &str = include_str!("corpus.txt");

/// What the proxy must do with a case, where the spec fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The proxy answers with a 4xx/5xx itself (this status, if given) and
    /// forwards none of it.
    Refused(Option<u16>),
    /// The request reaches the backend and its response reaches the client.
    Forwarded,
}

/// One client write (it may hold several pipelined requests).
#[derive(Debug, Clone)]
pub struct Case {
    /// Unique; only `[A-Za-z0-9._-]`.
    pub name: String,
    /// Where the idea comes from (the text inside `[...]`).
    pub source: String,
    pub bytes: Vec<u8>,
    pub expect: Option<Expect>,
    /// Byte strings that some forwarded request of this case must contain.
    pub backend_sees: Vec<Vec<u8>>,
}

/// The cases of the committed corpus, hand-written ones first, then the
/// ones generated from the mutation lists. Panics on a malformed corpus.
pub fn load() -> Vec<Case> {
    parse(TEXT).unwrap_or_else(|e| panic!("tests/smuggling/corpus.txt: {e}"))
}

/// A mutation-list entry (`+++ KIND name [source]`).
struct Mutation {
    kind: Kind,
    name: String,
    source: String,
    bytes: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Te,
    TeBytes,
    Cl,
    Chunk,
}

enum Block {
    Case(Case),
    Mutation(Mutation),
}

/// Parses corpus text into cases (hand-written, then generated).
pub fn parse(text: &str) -> Result<Vec<Case>, String> {
    let mut blocks: Vec<(usize, Block)> = Vec::new();
    let mut body_started = false;
    for (i, raw_line) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        let at = |e: String| format!("line {lineno}: {e}");
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("=== ") {
            let (name, source) = name_and_source(rest).map_err(at)?;
            blocks.push((
                lineno,
                Block::Case(Case {
                    name,
                    source,
                    bytes: Vec::new(),
                    expect: None,
                    backend_sees: Vec::new(),
                }),
            ));
            body_started = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix("+++ ") {
            let (kind, rest) = rest
                .split_once(' ')
                .ok_or_else(|| at("`+++` needs a kind and a name".into()))?;
            let kind = match kind {
                "te" => Kind::Te,
                "te-bytes" => Kind::TeBytes,
                "cl" => Kind::Cl,
                "chunk" => Kind::Chunk,
                other => return Err(at(format!("unknown mutation kind {other:?}"))),
            };
            let (name, source) = name_and_source(rest).map_err(at)?;
            blocks.push((
                lineno,
                Block::Mutation(Mutation {
                    kind,
                    name,
                    source,
                    bytes: Vec::new(),
                }),
            ));
            body_started = false;
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let Some((_, block)) = blocks.last_mut() else {
            return Err(at("bytes before the first `===` or `+++` line".into()));
        };
        match block {
            Block::Case(case) => {
                if !body_started {
                    if let Some(v) = line.strip_prefix("expect: ") {
                        if case.expect.is_some() {
                            return Err(at("a second `expect:` line".into()));
                        }
                        case.expect = Some(parse_expect(v).map_err(at)?);
                        continue;
                    }
                    if let Some(v) = line.strip_prefix("backend-sees: ") {
                        case.backend_sees.push(unescape(v).map_err(at)?);
                        continue;
                    }
                }
                body_started = true;
                case.bytes.extend(unescape(line).map_err(at)?);
            }
            Block::Mutation(m) => {
                body_started = true;
                m.bytes.extend(unescape(line).map_err(at)?);
            }
        }
    }

    let mut cases = Vec::new();
    let mut mutations = Vec::new();
    for (lineno, b) in blocks {
        match b {
            Block::Case(c) => {
                if c.bytes.is_empty() {
                    return Err(format!("line {lineno}: case {:?} has no bytes", c.name));
                }
                cases.push(c);
            }
            Block::Mutation(m) => {
                if m.bytes.is_empty() {
                    return Err(format!("line {lineno}: mutation {:?} has no bytes", m.name));
                }
                mutations.push(m);
            }
        }
    }
    for m in &mutations {
        generate(m, &mut cases);
    }
    let mut seen = BTreeSet::new();
    for c in &cases {
        if !seen.insert(c.name.as_str()) {
            return Err(format!("two cases are called {:?}", c.name));
        }
    }
    Ok(cases)
}

fn name_and_source(rest: &str) -> Result<(String, String), String> {
    let rest = rest.trim();
    let (name, source) = match rest.split_once(' ') {
        Some((n, s)) => (n, s.trim()),
        None => (rest, ""),
    };
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!("bad case name {name:?} (only [A-Za-z0-9._-])"));
    }
    let source = if source.is_empty() {
        String::new()
    } else {
        source
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .ok_or_else(|| format!("source {source:?} is not in [brackets]"))?
            .to_string()
    };
    Ok((name.to_string(), source))
}

fn parse_expect(v: &str) -> Result<Expect, String> {
    let mut words = v.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("forwarded"), None, None) => Ok(Expect::Forwarded),
        (Some("refused"), None, None) => Ok(Expect::Refused(None)),
        (Some("refused"), Some(s), None) => match s.parse::<u16>() {
            Ok(n) if (400..600).contains(&n) => Ok(Expect::Refused(Some(n))),
            _ => Err(format!("bad status {s:?} in `expect: refused`")),
        },
        _ => Err(format!(
            "bad expectation {v:?} (`refused`, `refused NNN` or `forwarded`)"
        )),
    }
}

/// Decodes one corpus line: `\r` `\n` `\t` `\0` `\\` `\xHH`; other bytes as
/// written. Literal tabs and control bytes are refused (write them escaped).
pub fn unescape(line: &str) -> Result<Vec<u8>, String> {
    let b = line.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c < 0x20 || c == 0x7f {
            return Err(format!(
                "literal control byte 0x{c:02x} at column {} (write it as \\x{c:02x})",
                i + 1
            ));
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *b
            .get(i + 1)
            .ok_or_else(|| "a line ends with a lone backslash".to_string())?;
        match e {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = b
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad \\x escape at column {}", i + 1))?;
                out.push(hex);
                i += 2;
            }
            other => {
                return Err(format!(
                    "unknown escape \\{} at column {}",
                    other as char,
                    i + 1
                ))
            }
        }
        i += 2;
    }
    Ok(out)
}

/// The inverse of `unescape`, for messages: printable ASCII as is, the rest
/// escaped; newlines are escaped too, so the result is one line.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

// ---------------------------------------------------------------------------
// Generators: each mutation crossed with the templates that use its kind
// ---------------------------------------------------------------------------

const HOST: &[u8] = b"Host: app.test\r\n";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn push(cases: &mut Vec<Case>, name: String, source: &str, template: &str, bytes: Vec<u8>) {
    let source = if source.is_empty() {
        format!("generated: {template}")
    } else {
        format!("{source}; generated: {template}")
    };
    cases.push(Case {
        name,
        source,
        bytes,
        expect: None,
        backend_sees: Vec::new(),
    });
}

fn generate(m: &Mutation, cases: &mut Vec<Case>) {
    match m.kind {
        Kind::Te => te_templates(&m.name, &m.source, &m.bytes, cases),
        Kind::TeBytes => {
            for &b in &m.bytes {
                let b = [b];
                let variants: [(&str, Vec<u8>); 4] = [
                    ("pre", cat(&[&b, b"Transfer-Encoding: chunked"])),
                    ("post", cat(&[b"Transfer-Encoding", &b, b": chunked"])),
                    ("mid", cat(&[b"Transfer-Encoding:", &b, b"chunked"])),
                    ("end", cat(&[b"Transfer-Encoding: chunked", &b])),
                ];
                for (pos, line) in variants {
                    let name = format!("{}-{pos}-{:02x}", m.name, b[0]);
                    te_templates(&name, &m.source, &line, cases);
                }
            }
        }
        Kind::Cl => {
            let n = &m.name;
            let next = format!("GET /cl-{n}-next HTTP/1.1\r\nHost: app.test\r\n\r\n");
            push(
                cases,
                format!("cl-{n}"),
                &m.source,
                "cl: POST with body `hello`, then a pipelined GET",
                cat(&[
                    format!("POST /cl-{n} HTTP/1.1\r\n").as_bytes(),
                    HOST,
                    &m.bytes,
                    b"\r\n\r\nhello",
                    next.as_bytes(),
                ]),
            );
            push(
                cases,
                format!("clget-{n}"),
                &m.source,
                "clget: GET with body `hello`",
                cat(&[
                    format!("GET /clget-{n} HTTP/1.1\r\n").as_bytes(),
                    HOST,
                    &m.bytes,
                    b"\r\n\r\nhello",
                ]),
            );
        }
        Kind::Chunk => {
            let n = &m.name;
            let head = |t: &str| {
                format!(
                    "POST /{t}-{n} HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
            };
            push(
                cases,
                format!("chunk-{n}"),
                &m.source,
                "chunk: the body after a chunked POST head, one write",
                cat(&[head("chunk").as_bytes(), &m.bytes]),
            );
            let next = format!("GET /chunkp-{n}-next HTTP/1.1\r\nHost: app.test\r\n\r\n");
            push(
                cases,
                format!("chunkp-{n}"),
                &m.source,
                "chunkp: the same, then a pipelined GET",
                cat(&[head("chunkp").as_bytes(), &m.bytes, next.as_bytes()]),
            );
        }
    }
}

/// A Transfer-Encoding header line (or lines) `te`, without its final CRLF,
/// in three requests: TE alone (+ a pipelined GET), CL.TE (CL covers
/// `0\r\n\r\nG`, so a TE reader is left with `G`), TE.CL (CL covers only
/// the chunk-size line, so a CL reader is left with the chunk data).
fn te_templates(n: &str, source: &str, te: &[u8], cases: &mut Vec<Case>) {
    let next = format!("GET /te-{n}-next HTTP/1.1\r\nHost: app.test\r\n\r\n");
    push(
        cases,
        format!("te-{n}"),
        source,
        "te: TE alone, chunked `hello`, then a pipelined GET",
        cat(&[
            format!("POST /te-{n} HTTP/1.1\r\n").as_bytes(),
            HOST,
            te,
            b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            next.as_bytes(),
        ]),
    );
    push(
        cases,
        format!("clte-{n}"),
        source,
        "clte: Content-Length 6 then TE, body `0\\r\\n\\r\\nG`",
        cat(&[
            format!("POST /clte-{n} HTTP/1.1\r\n").as_bytes(),
            HOST,
            b"Content-Length: 6\r\n",
            te,
            b"\r\n\r\n0\r\n\r\nG",
        ]),
    );
    push(
        cases,
        format!("tecl-{n}"),
        source,
        "tecl: TE then Content-Length 3, chunk `SMUGGLED`",
        cat(&[
            format!("POST /tecl-{n} HTTP/1.1\r\n").as_bytes(),
            HOST,
            te,
            b"\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        ]),
    );
}
