//! AWS's wording for S3 error codes. Handlers build errors with [`aws`]; the
//! front also fills the message into errors that s3s itself raised without
//! one (signature checks, malformed requests), because SDKs and people read
//! the message and S3 always sends one.

use s3s::{S3Error, S3ErrorCode};

/// The message S3 sends with `code` when nothing more specific applies.
pub fn default_message(code: &str) -> Option<&'static str> {
    Some(match code {
        "AccessDenied" => "Access Denied",
        "BadDigest" => "The Content-MD5 you specified did not match what we received.",
        "BucketAlreadyExists" => "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.",
        "BucketAlreadyOwnedByYou" => "Your previous request to create the named bucket succeeded and you already own it.",
        "BucketNotEmpty" => "The bucket you tried to delete is not empty",
        "EntityTooLarge" => "Your proposed upload exceeds the maximum allowed size",
        "EntityTooSmall" => "Your proposed upload is smaller than the minimum allowed size",
        "IncompleteBody" => "You did not provide the number of bytes specified by the Content-Length HTTP header",
        "InternalError" => "We encountered an internal error. Please try again.",
        "InvalidAccessKeyId" => "The AWS Access Key Id you provided does not exist in our records.",
        "InvalidArgument" => "Invalid Argument",
        "InvalidBucketName" => "The specified bucket is not valid.",
        "InvalidDigest" => "The Content-MD5 you specified is not valid.",
        "InvalidLocationConstraint" => "The specified location-constraint is not valid",
        "InvalidPart" => "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
        "InvalidPartOrder" => "The list of parts was not in ascending order. The parts list must be specified in order by part number.",
        "InvalidRange" => "The requested range is not satisfiable",
        "InvalidRequest" => "Invalid Request",
        "InvalidToken" => "The provided token is malformed or otherwise invalid.",
        "InvalidURI" => "Couldn't parse the specified URI.",
        "KeyTooLongError" => "Your key is too long",
        "MalformedXML" => "The XML you provided was not well-formed or did not validate against our published schema",
        "MalformedPolicy" => "Policies must be valid JSON and the first byte must be '{'",
        "MaxMessageLengthExceeded" => "Your request was too big.",
        "MethodNotAllowed" => "The specified method is not allowed against this resource.",
        "MissingContentLength" => "You must provide the Content-Length HTTP header.",
        "MissingSecurityHeader" => "Your request is missing a required header.",
        "NoSuchBucket" => "The specified bucket does not exist",
        "NoSuchBucketPolicy" => "The bucket policy does not exist",
        "NoSuchKey" => "The specified key does not exist.",
        "NoSuchUpload" => "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
        "NotImplemented" => "A header you provided implies functionality that is not implemented",
        "PreconditionFailed" => "At least one of the pre-conditions you specified did not hold",
        "RequestTimeTooSkewed" => "The difference between the request time and the current time is too large.",
        "SignatureDoesNotMatch" => "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        "XAmzContentSHA256Mismatch" => "The provided 'x-amz-content-sha256' header does not match what was computed.",
        _ => return None,
    })
}

/// An error with AWS's own message for its code.
pub fn aws(code: S3ErrorCode) -> S3Error {
    match default_message(code.as_str()) {
        Some(msg) => S3Error::with_message(code, msg),
        None => S3Error::new(code),
    }
}

/// An internal failure: logged in full, answered as S3's InternalError.
pub fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "s3 internal error");
    aws(S3ErrorCode::InternalError)
}

/// Rewrites an S3 error document so it carries a Message (AWS's wording for
/// the code when s3s gave none) and a RequestId. Returns None when `xml` is
/// not an error document.
pub fn complete_error_xml(xml: &[u8], request_id: &str) -> Option<String> {
    let text = std::str::from_utf8(xml).ok()?;
    let code = between(text, "<Code>", "</Code>")?;
    let message = between(text, "<Message>", "</Message>")
        .map(str::to_string)
        .or_else(|| default_message(code).map(escape));
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>");
    out.push_str(code);
    out.push_str("</Code>");
    if let Some(m) = message {
        out.push_str("<Message>");
        out.push_str(&m);
        out.push_str("</Message>");
    }
    out.push_str("<RequestId>");
    out.push_str(request_id);
    out.push_str("</RequestId></Error>");
    Some(out)
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// `xml` with every control character XML 1.0 cannot carry raw (all below
/// U+0020 but tab and line feed; carriage return too, which a parser would
/// turn into a line feed) written as a character reference, as S3 writes
/// object keys holding them. `None` when there is none.
pub fn escape_control_characters(xml: &[u8]) -> Option<Vec<u8>> {
    let needs = |b: u8| b < 0x20 && b != b'\t' && b != b'\n';
    if !xml.iter().any(|&b| needs(b)) {
        return None;
    }
    let mut out = Vec::with_capacity(xml.len() + 16);
    for &b in xml {
        if needs(b) {
            out.extend_from_slice(format!("&#x{b:x};").as_bytes());
        } else {
            out.push(b);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_character_references() {
        assert_eq!(escape_control_characters(b"<Key>a\tb\n</Key>"), None);
        assert_eq!(
            escape_control_characters(b"<Key>\x1c\x00\r</Key>").unwrap(),
            b"<Key>&#x1c;&#x0;&#xd;</Key>"
        );
    }

    #[test]
    fn fills_missing_messages() {
        let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SignatureDoesNotMatch</Code></Error>";
        let out = complete_error_xml(xml, "r1").unwrap();
        assert!(out.contains("<Message>The request signature we calculated does not match"));
        assert!(out.contains("<RequestId>r1</RequestId>"));
        let xml = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        let out = complete_error_xml(xml, "r2").unwrap();
        assert!(out.contains("<Message>Request has expired</Message>"));
        assert!(complete_error_xml(b"<ListBucketResult/>", "r").is_none());
        let xml = b"<Error><Code>MalformedPolicy</Code></Error>";
        assert!(complete_error_xml(xml, "r")
            .unwrap()
            .contains("the first byte must be &apos;{&apos;"));
    }
}
