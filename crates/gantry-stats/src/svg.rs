//! Small helpers for the hand-written SVG of the chart and the memory map.

use std::fmt::Write as _;

/// Escapes text for XML text and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 forbids outright: drop them.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// About `target` evenly spaced "nice" tick values (steps of 1, 2 or 5 times a power of ten)
/// covering `lo..=hi`; returns the ticks, the first at or below `lo` and the last at or above
/// `hi`.
pub(crate) fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + lo.abs().max(1.0))
    };
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() * step;
    let mut ticks = Vec::new();
    let mut i = 0;
    loop {
        let t = first + i as f64 * step;
        ticks.push(t);
        if t >= hi - step * 1e-9 || i > 1000 {
            break;
        }
        i += 1;
    }
    ticks
}

/// Distinct colours for series (Tableau 10).
pub(crate) const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// Appends `<text>` at (x, y) with the escaped `text`.
pub(crate) fn text(out: &mut String, x: f64, y: f64, anchor: &str, class: &str, text: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" class="{class}">{}</text>"#,
        escape(text)
    );
}

#[cfg(test)]
pub(crate) mod xml_check {
    //! A tiny XML well-formedness checker for the tests: balanced tags, quoted attributes,
    //! known entities, no stray `<` or `&`.

    /// Checks `s` is one well-formed XML document (no DTD); returns the element names in
    /// document order.
    pub(crate) fn check(s: &str) -> Result<Vec<String>, String> {
        let b = s.as_bytes();
        let mut i = 0;
        let mut stack: Vec<String> = Vec::new();
        let mut elements = Vec::new();
        let mut roots = 0;
        while i < b.len() {
            if b[i] == b'<' {
                if s[i..].starts_with("<?") {
                    i += s[i..].find("?>").ok_or("unclosed <?")? + 2;
                } else if s[i..].starts_with("<!--") {
                    let end = s[i + 4..].find("-->").ok_or("unclosed comment")?;
                    if s[i + 4..i + 4 + end].contains("--") {
                        return Err("-- inside a comment".into());
                    }
                    i += 4 + end + 3;
                } else if s[i..].starts_with("</") {
                    let end = s[i..].find('>').ok_or("unclosed end tag")?;
                    let name = s[i + 2..i + end].trim_end();
                    let open = stack.pop().ok_or(format!("</{name}> without a start"))?;
                    if open != name {
                        return Err(format!("<{open}> closed by </{name}>"));
                    }
                    i += end + 1;
                } else {
                    let (name, len, empty) = start_tag(&s[i..])?;
                    if stack.is_empty() {
                        roots += 1;
                    }
                    elements.push(name.clone());
                    if !empty {
                        stack.push(name);
                    }
                    i += len;
                }
            } else {
                let end = s[i..].find('<').map_or(b.len(), |e| i + e);
                let txt = &s[i..end];
                if txt.contains('>') && txt.contains("]]>") {
                    return Err("]]> in text".into());
                }
                entities(txt)?;
                if stack.is_empty() && !txt.trim().is_empty() {
                    return Err(format!("text outside the root: {txt:?}"));
                }
                i = end;
            }
        }
        if let Some(open) = stack.pop() {
            return Err(format!("<{open}> never closed"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(elements)
    }

    fn is_name(c: char) -> bool {
        c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
    }

    fn start_tag(s: &str) -> Result<(String, usize, bool), String> {
        let body = &s[1..];
        let name_len = body.find(|c: char| !is_name(c)).ok_or("unclosed tag")?;
        if name_len == 0 {
            return Err(format!("bad tag start: {:?}", &s[..s.len().min(20)]));
        }
        let name = body[..name_len].to_owned();
        let mut rest = &body[name_len..];
        let mut seen = Vec::new();
        loop {
            let trimmed = rest.trim_start();
            let had_space = trimmed.len() != rest.len();
            rest = trimmed;
            if let Some(r) = rest.strip_prefix("/>") {
                return Ok((name, s.len() - r.len(), true));
            }
            if let Some(r) = rest.strip_prefix('>') {
                return Ok((name, s.len() - r.len(), false));
            }
            if !had_space {
                return Err(format!("<{name}>: attributes must be separated by space"));
            }
            let alen = rest.find(|c: char| !is_name(c)).ok_or("unclosed tag")?;
            if alen == 0 {
                return Err(format!(
                    "<{name}>: bad attribute at {:?}",
                    &rest[..rest.len().min(20)]
                ));
            }
            let attr = &rest[..alen];
            if seen.contains(&attr) {
                return Err(format!("<{name}>: attribute {attr} twice"));
            }
            seen.push(attr);
            rest = rest[alen..].trim_start();
            rest = rest
                .strip_prefix('=')
                .ok_or(format!("<{name}>: {attr} has no value"))?
                .trim_start();
            let q = rest.chars().next().ok_or("unclosed tag")?;
            if q != '"' && q != '\'' {
                return Err(format!("<{name}>: {attr} value not quoted"));
            }
            let end = rest[1..].find(q).ok_or("unclosed attribute value")?;
            let value = &rest[1..1 + end];
            if value.contains('<') {
                return Err(format!("<{name}>: < in {attr}"));
            }
            entities(value)?;
            rest = &rest[end + 2..];
        }
    }

    fn entities(t: &str) -> Result<(), String> {
        let mut rest = t;
        while let Some(at) = rest.find('&') {
            let after = &rest[at + 1..];
            let end = after.find(';').ok_or(format!("bare & in {t:?}"))?;
            let ent = &after[..end];
            let ok = matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos")
                || ent
                    .strip_prefix("#x")
                    .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
                || ent
                    .strip_prefix('#')
                    .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            if !ok {
                return Err(format!("unknown entity &{ent};"));
            }
            rest = &after[end + 1..];
        }
        Ok(())
    }

    #[test]
    fn checker_accepts_and_rejects() {
        assert!(check(r#"<?xml version="1.0"?><a x="1"><b/>t &amp; u<!-- c --></a>"#).is_ok());
        for bad in [
            "<a><b></a>",
            "<a>",
            "<a x=1/>",
            "<a>&</a>",
            "<a>&foo;</a>",
            "<a/><b/>",
            r#"<a x="<"/>"#,
            r#"<a x="1" x="2"/>"#,
            "text",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escape_makes_any_text_safe() {
        let nasty = "<script>&\"'\u{1}é";
        let doc = format!(r#"<a t="{0}">{0}</a>"#, super::escape(nasty));
        assert!(check(&doc).is_ok(), "{doc}");
    }
}
