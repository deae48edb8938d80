//! Domain metadata of a block domain, kept as the VG's tags
//! `MDT_<KEY>=<VALUE>` (VDSM's layout, every version), sealed by the tag
//! `MDT__SHA_CKSUM=<sha1>` computed over the decoded `KEY=VALUE` lines
//! exactly as a file domain's seal.
//!
//! LVM tags allow few characters: any other is written `&<code>&` (its
//! decimal Unicode code point), `&` itself included.

use super::domain_md::{DomainMetadata, DomainMetadataError, CHECKSUM_KEY};

pub const PREFIX: &str = "MDT_";

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+.-/=!:#".contains(c)
}

pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if allowed(c) {
            out.push(c);
        } else {
            out.push_str(&format!("&{}&", c as u32));
        }
    }
    out
}

/// Decodes `&<code>&` escapes; None for a malformed one.
pub fn decode(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find('&')?;
        let code: u32 = after[..end].parse().ok()?;
        out.push(char::from_u32(code)?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The VG tags that hold `md`, seal included.
pub fn to_tags(md: &DomainMetadata) -> Vec<String> {
    let mut tags: Vec<String> = md
        .iter()
        .map(|(k, v)| format!("{PREFIX}{}={}", encode(k), encode(v)))
        .collect();
    tags.push(format!("{PREFIX}{CHECKSUM_KEY}={}", md.checksum()));
    tags
}

/// The metadata among a VG's tags (others, such as `RHAT_storage_domain`,
/// are not metadata), its seal checked.
pub fn from_tags<'a>(
    tags: impl IntoIterator<Item = &'a str>,
) -> Result<DomainMetadata, DomainMetadataError> {
    let mut pairs = Vec::new();
    for tag in tags {
        let Some(entry) = tag.strip_prefix(PREFIX) else {
            continue;
        };
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        let (Some(k), Some(v)) = (decode(k), decode(v)) else {
            return Err(DomainMetadataError::Malformed(tag.to_string()));
        };
        pairs.push((k, v));
    }
    DomainMetadata::from_pairs(pairs)
}

/// The tags to remove and to add to go from `old` to `new`, for one
/// `vgchange` (one LVM metadata commit, so an update is atomic).
pub fn diff(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let del = old
        .iter()
        .filter(|t| t.starts_with(PREFIX) && !new.contains(t))
        .cloned()
        .collect();
    let add = new.iter().filter(|t| !old.contains(t)).cloned().collect();
    (del, add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    #[test]
    fn tags_as_vdsm_writes_them() {
        let mut md = DomainMetadata::new();
        md.set("VERSION", "5");
        md.set("DESCRIPTION", "fast, big & cheap");
        md.set(
            "PV0",
            "pv:36001405a,uuid:Xy-1,pestart:0,pecount:100,mapoffset:0",
        );
        let tags = to_tags(&md);
        // Written by hand from the reference: space &32&, comma &44&, & &38&.
        let sha: String = Sha1::digest(
            b"DESCRIPTION=fast, big & cheapPV0=pv:36001405a,uuid:Xy-1,pestart:0,pecount:100,mapoffset:0VERSION=5",
        )
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
        assert_eq!(
            tags,
            vec![
                "MDT_DESCRIPTION=fast&44&&32&big&32&&38&&32&cheap".to_string(),
                "MDT_PV0=pv:36001405a&44&uuid:Xy-1&44&pestart:0&44&pecount:100&44&mapoffset:0"
                    .to_string(),
                "MDT_VERSION=5".to_string(),
                format!("MDT__SHA_CKSUM={sha}"),
            ]
        );
        let mut with_others = tags.clone();
        with_others.push("RHAT_storage_domain".into());
        assert_eq!(
            from_tags(with_others.iter().map(String::as_str)).unwrap(),
            md
        );
    }

    #[test]
    fn non_ascii_round_trips_and_a_broken_seal_is_caught() {
        let mut md = DomainMetadata::new();
        md.set("DESCRIPTION", "caf\u{e9}");
        let tags = to_tags(&md);
        assert_eq!(tags[0], "MDT_DESCRIPTION=caf&233&");
        assert_eq!(from_tags(tags.iter().map(String::as_str)).unwrap(), md);
        let forged: Vec<String> = tags.iter().map(|t| t.replace("caf", "cab")).collect();
        assert!(matches!(
            from_tags(forged.iter().map(String::as_str)),
            Err(DomainMetadataError::SealBroken { .. })
        ));
        for bad in ["MDT_X=&12", "MDT_X=&x&", "MDT_X=&55296&"] {
            assert!(from_tags([bad]).is_err(), "{bad}");
        }
        // An unsealed VG (older VDSM) is read, as a file is.
        assert_eq!(
            from_tags(["MDT_VERSION=3"]).unwrap().get("VERSION"),
            Some("3")
        );
    }

    #[test]
    fn an_update_is_one_diff() {
        let mut md = DomainMetadata::new();
        md.set("ROLE", "Regular");
        md.set("VERSION", "5");
        let old = to_tags(&md);
        md.set("ROLE", "Master");
        let new = to_tags(&md);
        let (del, add) = diff(
            &[old.clone(), vec!["RHAT_storage_domain".into()]].concat(),
            &new,
        );
        assert_eq!(del.len(), 2, "the role and the seal: {del:?}");
        assert_eq!(add.len(), 2, "{add:?}");
        assert!(!del.contains(&"RHAT_storage_domain".to_string()));
    }
}
