//! Which rendering a status request gets: HTML for a browser or for
//! `?html`, Prometheus text for everything else (a scraper, `curl`).
//!
//! `*/*` alone does not ask for HTML: curl sends it, and recent Prometheus
//! servers end their Accept list with it. Only a media range naming
//! `text/html` does, unless its weight is `q=0` ("not acceptable").
//! Works on raw header bytes, never allocates, never panics.

/// True for an `html` query parameter (alone or among `&`-separated ones,
/// with or without `=value`) or an Accept header that lists `text/html`
/// (case-insensitive) with a weight other than 0.
pub fn wants_html(accept: Option<&[u8]>, query: Option<&[u8]>) -> bool {
    query.is_some_and(query_has_html) || accept.is_some_and(accept_has_html)
}

fn query_has_html(query: &[u8]) -> bool {
    let query = query.strip_prefix(b"?").unwrap_or(query);
    query.split(|&b| b == b'&').any(|param| {
        let name = param.split(|&b| b == b'=').next().unwrap_or(param);
        name == b"html"
    })
}

fn accept_has_html(accept: &[u8]) -> bool {
    accept.split(|&b| b == b',').any(|range| {
        let mut parts = range.split(|&b| b == b';');
        let media = parts.next().unwrap_or(range).trim_ascii();
        media.eq_ignore_ascii_case(b"text/html") && !parts.any(is_zero_weight)
    })
}

/// `q=0`, `q=0.`, `q=0.000` (RFC 9110 §12.4.2 allows up to three decimals).
fn is_zero_weight(param: &[u8]) -> bool {
    let param = param.trim_ascii();
    let Some((name, value)) = param
        .iter()
        .position(|&b| b == b'=')
        .map(|i| (param[..i].trim_ascii(), param[i + 1..].trim_ascii()))
    else {
        return false;
    };
    if !name.eq_ignore_ascii_case(b"q") {
        return false;
    }
    match value.strip_prefix(b"0") {
        Some(rest) => match rest.strip_prefix(b".") {
            Some(decimals) => decimals.iter().all(|&b| b == b'0'),
            None => rest.is_empty(),
        },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> bool {
        wants_html(Some(v.as_bytes()), None)
    }

    fn query(v: &str) -> bool {
        wants_html(None, Some(v.as_bytes()))
    }

    #[test]
    fn the_html_query_parameter_asks_for_html_in_any_position_and_form() {
        for q in [
            "html",
            "?html",
            "html=1",
            "html=",
            "a=1&html",
            "a&html=yes&b",
            "&html&",
        ] {
            assert!(query(q), "{q}");
        }
        for q in [
            "",
            "?",
            "htm",
            "htmlx",
            "xhtml",
            "a=html",
            "HTML",
            "h=html&x",
            "html_page=1",
        ] {
            assert!(!query(q), "{q}");
        }
    }

    #[test]
    fn a_browser_accept_header_asks_for_html() {
        assert!(accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
        ));
        assert!(accept("TEXT/HTML"));
        assert!(accept("application/json, Text/Html ;q=0.1"));
        assert!(accept("text/html;level=1;q=0.5"));
        assert!(accept("text/html; q=0.001"));
    }

    #[test]
    fn scrapers_and_curl_get_prometheus_text() {
        assert!(!wants_html(None, None));
        assert!(!accept("*/*"));
        assert!(!accept(""));
        assert!(!accept(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
        ));
        assert!(!accept("text/*"));
        assert!(!accept("text/htmlx"));
        assert!(!accept("application/xhtml+xml"));
    }

    #[test]
    fn a_zero_weight_refuses_html() {
        for v in [
            "text/html;q=0",
            "text/html; Q = 0.000",
            "text/html;q=0.",
            "*/*, text/html;q=0",
        ] {
            assert!(!accept(v), "{v}");
        }
        assert!(
            accept("text/html;q=0, text/html"),
            "a later range may accept it"
        );
    }

    #[test]
    fn the_query_wins_over_an_accept_that_does_not_want_html() {
        assert!(wants_html(Some(b"*/*"), Some(b"html")));
        assert!(wants_html(Some(b"text/html"), Some(b"")));
    }
}
