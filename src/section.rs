//! A section: one site, with its settings, its static roots and counters.
//! Its idle backends and waiting requests are kept by `dispatch`, under the
//! same index.

use crate::config::SectionConfig;
use crate::static_files::StaticRoot;
use crate::status::SectionCounters;

pub struct Section {
    pub cfg: SectionConfig,
    /// `docroot`: files served before asking a backend.
    pub docroot: Option<StaticRoot>,
    /// `sendfileroot`: where X-Sendfile paths are resolved.
    pub sendfile_root: Option<StaticRoot>,
    /// Display name for logs: the first incoming name.
    pub name: String,
    /// This worker's counters; a reload carries them over to the section
    /// that takes over the old one's backend addresses.
    pub stats: SectionCounters,
}

impl Section {
    /// Opens the section's docroot and sendfileroot; an error names the
    /// directory and why it cannot be used.
    pub fn new(cfg: SectionConfig) -> Result<Self, String> {
        let name = cfg
            .incoming
            .first()
            .cloned()
            .unwrap_or_else(|| "(unnamed)".into());
        let docroot = match &cfg.docroot {
            Some(dir) => Some(
                StaticRoot::new(
                    dir,
                    cfg.staticmask.as_deref(),
                    cfg.cache_directory.as_deref(),
                    &cfg.cache_extensions,
                )
                .map_err(|e| format!("section {name}: docroot: {e}"))?,
            ),
            None => None,
        };
        let sendfile_root = match &cfg.sendfileroot {
            Some(dir) => Some(
                StaticRoot::new(dir, None, None, &[])
                    .map_err(|e| format!("section {name}: sendfileroot: {e}"))?,
            ),
            None => None,
        };
        Ok(Section {
            cfg,
            docroot,
            sendfile_root,
            name,
            stats: SectionCounters::default(),
        })
    }
}
