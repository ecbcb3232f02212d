//! Static files: finding a request's file under a docroot (or an X-Sendfile
//! path under a sendfileroot) safely, and planning the response head.
//!
//! INTERFACE CONTRACT (the reactor codes against exactly these items):
//! - `StaticRoot::new(root, staticmask, cache_directory, cache_extensions)`
//! - `StaticRoot::lookup(raw_path) -> Option<FoundFile>`  (docroot requests)
//! - `StaticRoot::lookup_sendfile(value) -> Option<FoundFile>`  (X-Sendfile)
//! - `plan(&FoundFile, &Conditions, is_head) -> Plan`
//! - `write_head(&FoundFile, &Plan, connection, out: &mut [u8]) -> Option<usize>`
//! - `write_entity_headers(&FoundFile, &Plan, out: &mut [u8]) -> Option<usize>`

use std::fs::File;
use std::path::Path;
use std::time::SystemTime;

/// A docroot or sendfileroot.
pub struct StaticRoot {
    _private: (),
}

/// An open regular file found under a root.
pub struct FoundFile {
    pub file: File,
    pub len: u64,
    pub mtime: SystemTime,
    pub content_type: &'static str,
}

/// The request headers that decide a static response.
#[derive(Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

/// What to send: the status and which bytes of the file (none for 304/416
/// and HEAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub status: u16,
    /// (offset, length) of the file bytes in the body.
    pub body: Option<(u64, u64)>,
    /// Content-Length announced (the range length; for HEAD what GET would send).
    pub content_length: u64,
    /// For 206: the range served; for 416: None and `unsatisfied` true.
    pub range: Option<(u64, u64)>,
    pub unsatisfied: bool,
}

impl StaticRoot {
    pub fn new(
        _root: &Path,
        _staticmask: Option<&str>,
        _cache_directory: Option<&str>,
        _cache_extensions: &[String],
    ) -> Result<StaticRoot, String> {
        Err("static files are not written yet".into())
    }

    pub fn lookup(&self, _raw_path: &[u8]) -> Option<FoundFile> {
        None
    }

    pub fn lookup_sendfile(&self, _value: &[u8]) -> Option<FoundFile> {
        None
    }
}

pub fn plan(_f: &FoundFile, _c: &Conditions<'_>, _is_head: bool) -> Plan {
    Plan {
        status: 500,
        body: None,
        content_length: 0,
        range: None,
        unsatisfied: false,
    }
}

pub fn write_head(_f: &FoundFile, _p: &Plan, _connection: &str, _out: &mut [u8]) -> Option<usize> {
    None
}

pub fn write_entity_headers(_f: &FoundFile, _p: &Plan, _out: &mut [u8]) -> Option<usize> {
    None
}
