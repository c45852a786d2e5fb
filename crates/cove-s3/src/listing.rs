//! The pure parts of listing and multipart: how a sorted run of keys becomes
//! one page of ListObjects (prefix, delimiter, common prefixes, max-keys,
//! where the next page starts), the opaque continuation token, the
//! `EncodingType=url` form of keys, and the multipart ETag.

use base64::Engine as _;

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub contents: Vec<(String, T)>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// The last key or common prefix on this page: the next page starts after it.
    pub last: Option<String>,
}

/// Builds one page from `entries`, which must be sorted by key (byte order,
/// as S3 lists). Keys outside `prefix` or not after `start_after` are skipped;
/// with a delimiter, keys that contain it past the prefix roll up into one
/// common prefix each, and a common prefix counts once toward `max_keys`.
pub fn page<T>(
    entries: impl IntoIterator<Item = (String, T)>,
    prefix: &str,
    delimiter: Option<&str>,
    start_after: Option<&str>,
    max_keys: usize,
) -> Page<T> {
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut out = Page {
        contents: Vec::new(),
        common_prefixes: Vec::new(),
        is_truncated: false,
        last: None,
    };
    let mut count = 0usize;
    for (key, value) in entries {
        if !key.starts_with(prefix) || start_after.is_some_and(|s| key.as_str() <= s) {
            continue;
        }
        let rolled = delimiter.and_then(|d| {
            key[prefix.len()..]
                .find(d)
                .map(|i| key[..prefix.len() + i + d.len()].to_string())
        });
        if let Some(cp) = &rolled {
            // Already on this page, or returned by an earlier page (the marker
            // may itself be a common prefix).
            if out.common_prefixes.last() == Some(cp)
                || start_after.is_some_and(|s| cp.as_str() <= s)
            {
                continue;
            }
        }
        if count == max_keys {
            out.is_truncated = max_keys > 0;
            break;
        }
        count += 1;
        match rolled {
            Some(cp) => {
                out.last = Some(cp.clone());
                out.common_prefixes.push(cp);
            }
            None => {
                out.last = Some(key.clone());
                out.contents.push((key, value));
            }
        }
    }
    out
}

/// ListObjectsV2's continuation token: opaque to clients, as on AWS.
pub fn encode_token(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
}

pub fn decode_token(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// `EncodingType=url`: keys as S3 writes them, percent-encoded except for
/// unreserved characters and `/`.
pub fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// The ETag of a completed multipart upload: the MD5 of the parts' binary
/// MD5s, then `-` and the number of parts. Clients (and the AWS CLI's
/// `s3 sync`) rely on this shape to tell multipart objects apart.
pub fn multipart_etag(part_md5s_hex: &[String]) -> Option<String> {
    let mut md5 = <s3s::crypto::Md5 as s3s::crypto::Checksum>::new();
    for part in part_md5s_hex {
        let raw = hex::decode(part).ok()?;
        s3s::crypto::Checksum::update(&mut md5, &raw);
    }
    let digest = s3s::crypto::Checksum::finalize(md5);
    Some(format!(
        "{}-{}",
        hex::encode(digest.as_ref()),
        part_md5s_hex.len()
    ))
}

/// Plain MD5 of some bytes, hex, as single-part ETags are.
pub fn md5_hex(data: &[u8]) -> String {
    let mut md5 = <s3s::crypto::Md5 as s3s::crypto::Checksum>::new();
    s3s::crypto::Checksum::update(&mut md5, data);
    hex::encode(s3s::crypto::Checksum::finalize(md5).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ks: &[&str]) -> Vec<(String, ())> {
        ks.iter().map(|k| (k.to_string(), ())).collect()
    }

    fn names(p: &Page<()>) -> Vec<&str> {
        p.contents.iter().map(|(k, _)| k.as_str()).collect()
    }

    const TREE: &[&str] = &[
        "a.txt",
        "photos/2023/jan.jpg",
        "photos/2023/feb.jpg",
        "photos/2024/mar.jpg",
        "photos/index.html",
        "videos/x.mp4",
        "z.txt",
    ];

    fn sorted() -> Vec<(String, ())> {
        let mut v = keys(TREE);
        v.sort();
        v
    }

    #[test]
    fn flat_pages_of_two() {
        let all = sorted();
        let p1 = page(all.clone(), "", None, None, 2);
        assert_eq!(names(&p1), ["a.txt", "photos/2023/feb.jpg"]);
        assert!(p1.is_truncated);
        let p2 = page(all.clone(), "", None, p1.last.as_deref(), 2);
        assert_eq!(names(&p2), ["photos/2023/jan.jpg", "photos/2024/mar.jpg"]);
        let p3 = page(all.clone(), "", None, p2.last.as_deref(), 2);
        let p4 = page(all.clone(), "", None, p3.last.as_deref(), 2);
        assert_eq!(names(&p4), ["z.txt"]);
        assert!(!p4.is_truncated);
        // Exactly max-keys left: AWS says not truncated.
        let p = page(all.clone(), "", None, Some("videos/x.mp4"), 1);
        assert_eq!(names(&p), ["z.txt"]);
        assert!(!p.is_truncated);
    }

    #[test]
    fn delimiter_rolls_up_common_prefixes() {
        let p = page(sorted(), "", Some("/"), None, 1000);
        assert_eq!(names(&p), ["a.txt", "z.txt"]);
        assert_eq!(p.common_prefixes, ["photos/", "videos/"]);
        let p = page(sorted(), "photos/", Some("/"), None, 1000);
        assert_eq!(names(&p), ["photos/index.html"]);
        assert_eq!(p.common_prefixes, ["photos/2023/", "photos/2024/"]);
        // A multi-character delimiter.
        let p = page(sorted(), "photos/", Some("/j"), None, 1000);
        assert_eq!(p.common_prefixes, ["photos/2023/j"]);
    }

    #[test]
    fn common_prefixes_count_toward_max_keys_and_resume_after_a_prefix() {
        let all = sorted();
        let p1 = page(all.clone(), "", Some("/"), None, 2);
        assert_eq!(names(&p1), ["a.txt"]);
        assert_eq!(p1.common_prefixes, ["photos/"]);
        assert!(p1.is_truncated);
        assert_eq!(p1.last.as_deref(), Some("photos/"));
        let p2 = page(all.clone(), "", Some("/"), p1.last.as_deref(), 2);
        assert_eq!(names(&p2), ["z.txt"]);
        assert_eq!(p2.common_prefixes, ["videos/"]);
        assert!(!p2.is_truncated);
        // One at a time: each common prefix is a page of its own.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let p = page(all.clone(), "", Some("/"), after.as_deref(), 1);
            seen.extend(p.common_prefixes.iter().cloned());
            seen.extend(p.contents.iter().map(|(k, _)| k.clone()));
            if !p.is_truncated {
                break;
            }
            after = p.last;
        }
        assert_eq!(seen, ["a.txt", "photos/", "videos/", "z.txt"]);
    }

    #[test]
    fn max_keys_zero_and_start_after() {
        let p = page(sorted(), "", None, None, 0);
        assert!(p.contents.is_empty() && !p.is_truncated);
        let p = page(sorted(), "photos/", None, Some("photos/2023/jan.jpg"), 10);
        assert_eq!(names(&p), ["photos/2024/mar.jpg", "photos/index.html"]);
    }

    #[test]
    fn tokens_round_trip_and_are_opaque() {
        let t = encode_token("photos/2023/é.jpg");
        assert!(!t.contains('/'));
        assert_eq!(decode_token(&t).as_deref(), Some("photos/2023/é.jpg"));
        assert_eq!(decode_token("%%%"), None);
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a b/c+d~é"), "a%20b/c%2Bd~%C3%A9");
    }

    #[test]
    fn etags() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        // Two parts "a" and "b": md5(md5("a") ++ md5("b")) with suffix -2.
        let parts = [md5_hex(b"a"), md5_hex(b"b")];
        let mut concat = hex::decode(&parts[0]).unwrap();
        concat.extend(hex::decode(&parts[1]).unwrap());
        assert_eq!(
            multipart_etag(&parts).unwrap(),
            format!("{}-2", md5_hex(&concat))
        );
        // A value computed independently (python: hashlib.md5(md5(a)+md5(b))).
        assert_eq!(
            multipart_etag(&parts).unwrap(),
            "96e024ba2074fe77e8e965ba43a704be-2"
        );
        assert_eq!(multipart_etag(&["zz".into()]), None);
    }
}
