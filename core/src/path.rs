//! The one canonical form of a request path that every rule, route and host
//! sees (docs/security.md "Paths"), so a path can't mean one thing to the
//! gate and another to the application.
//!
//! [`canonical_path`] applies, in order:
//! 1. percent-encoded unreserved characters (`A–Z a–z 0–9 - . _ ~`,
//!    RFC 3986 §2.3) are decoded, other escapes get upper-case hex
//!    (§6.2.2.1): `%2e` is `.`, `%7e` is `~`, `%c3%a9` is `%C3%A9`;
//! 2. runs of `/` become one `/` (as nginx's default `merge_slashes`);
//! 3. dot segments are removed (§5.2.4): `/a/./b/../c` is `/a/c`.
//!
//! It refuses ([`PathError`], a `400`) what can't be made canonical safely:
//! an encoded `/`, `\` or NUL (`%2F`, `%5C`, `%00`), a raw `\`, NUL or
//! other control character, a malformed escape, a `..` above the root, a
//! dot segment with a path parameter (`..;` as Tomcat reads it), and a path
//! that does not start with `/`.

use std::borrow::Cow;

/// Why a path has no safe canonical form; each answers `400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (an absolute-form or `*` target).
    #[error("the path must start with /")]
    NotAbsolute,
    /// `%2F`, `%5C` or `%00`: an encoded separator or NUL.
    #[error("the path has an encoded /, \\ or NUL")]
    EncodedSeparator,
    /// A raw `\`, NUL or other control character.
    #[error("the path has a backslash or a control character")]
    BadCharacter,
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent escape")]
    BadEscape,
    /// A `..` that would climb above `/`.
    #[error("the path climbs above the root")]
    AboveRoot,
    /// `.;x` or `..;x`: a dot segment some servers read as one.
    #[error("the path has a dot segment with a parameter")]
    DotParameter,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` is already canonical, checked in one pass without
/// allocating (the common case of every request).
fn is_canonical(path: &[u8]) -> Result<bool, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut canonical = true;
    let mut segment_start = 1;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    path.get(i + 1).copied().and_then(hex),
                    path.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let decoded = h << 4 | l;
                if matches!(decoded, b'/' | b'\\' | 0) {
                    return Err(PathError::EncodedSeparator);
                }
                if is_unreserved(decoded) || path[i + 1..i + 3].iter().any(u8::is_ascii_lowercase) {
                    canonical = false;
                }
                i += 3;
                continue;
            }
            b'\\' | 0..=0x1f | 0x7f => return Err(PathError::BadCharacter),
            b'/' if i > 0 => {
                let segment = &path[segment_start..i];
                if segment.is_empty() || is_dot_segment(segment)? {
                    canonical = false;
                }
                segment_start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if is_dot_segment(&path[segment_start..])? {
        canonical = false;
    }
    Ok(canonical)
}

/// `.` or `..`; a dot segment with a `;` parameter is refused.
fn is_dot_segment(segment: &[u8]) -> Result<bool, PathError> {
    let name = match segment.iter().position(|&b| b == b';') {
        Some(semi) => {
            if matches!(&segment[..semi], b"." | b"..") {
                return Err(PathError::DotParameter);
            }
            return Ok(false);
        }
        None => segment,
    };
    Ok(matches!(name, b"." | b".."))
}

/// The canonical form of a request path (no query): borrowed when `path`
/// is canonical already. See the module documentation for the rule.
///
/// Errors: [`PathError`] for a path with no safe canonical form.
pub fn canonical_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if is_canonical(path.as_bytes())? {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Escapes: unreserved decoded, the rest upper-cased.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (h, l) = (hex(bytes[i + 1]), hex(bytes[i + 2]));
            let value = h.zip(l).map(|(h, l)| h << 4 | l).expect("checked");
            if is_unreserved(value) {
                decoded.push(value as char);
            } else {
                decoded.push('%');
                decoded.push(bytes[i + 1].to_ascii_uppercase() as char);
                decoded.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            let next = path[i..].find('%').map_or(path.len(), |offset| i + offset);
            decoded.push_str(&path[i..next]);
            i = next;
        }
    }
    // 2 and 3. Empty and dot segments.
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (n, segment) in segments.iter().enumerate() {
        trailing_slash = n == last && segment.is_empty();
        match is_dot_segment(segment.as_bytes())? {
            true if *segment == ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = n == last;
            }
            true => trailing_slash = n == last,
            false if segment.is_empty() => {}
            false => out.push(segment),
        }
    }
    let mut canonical = String::with_capacity(decoded.len());
    for segment in &out {
        canonical.push('/');
        canonical.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        canonical.push('/');
    }
    Ok(Cow::Owned(canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/static/app.js",
            "/%C3%A9",
            "/a;b=c",
            "/a.b/..c",
        ] {
            assert!(
                matches!(canonical_path(p), Ok(Cow::Borrowed(_))),
                "{p}: {:?}",
                canonical_path(p)
            );
        }
    }

    #[test]
    fn dot_segments_and_escapes_are_resolved() {
        let cases = [
            ("/static/../private", "/private"),
            ("/static/%2e%2e/private", "/private"),
            ("/static/%2E%2e/private", "/private"),
            ("/static/.%2e/private", "/private"),
            ("/static/./x", "/static/x"),
            ("/static//../private", "/private"),
            ("//static/x", "/static/x"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("/%7euser", "/~user"),
            ("/%73tatic/x", "/static/x"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%25b", "/a%25b"),
            ("/a%252e%252e/b", "/a%252e%252e/b"),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical_path(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let cases = [
            ("/static/..%2fprivate", PathError::EncodedSeparator),
            ("/static/..%2Fprivate", PathError::EncodedSeparator),
            ("/static/..%5cprivate", PathError::EncodedSeparator),
            ("/a%00", PathError::EncodedSeparator),
            ("/static\\..\\private", PathError::BadCharacter),
            ("/a\u{0}b", PathError::BadCharacter),
            ("/a\nb", PathError::BadCharacter),
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/%2e%2e/etc", PathError::AboveRoot),
            ("/static/..;/private", PathError::DotParameter),
            ("/static/.;x/private", PathError::DotParameter),
            ("/a%2", PathError::BadEscape),
            ("/a%zz", PathError::BadEscape),
            ("a/b", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(canonical_path(raw), Err(want), "{raw:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn canonicalisation_is_idempotent_and_leaves_no_dot_segment(
            raw in "/[a-z./%2eE5cC;]{0,24}"
        ) {
            if let Ok(once) = canonical_path(&raw) {
                let twice = canonical_path(&once).unwrap();
                proptest::prop_assert_eq!(&*twice, &*once);
                proptest::prop_assert!(matches!(twice, Cow::Borrowed(_)));
                proptest::prop_assert!(once.split('/').all(|s| s != "." && s != ".."));
                proptest::prop_assert!(!once.contains("//"));
            }
        }
    }
}
