//! EC2 describe filters: `Filter.N.Name` / `Filter.N.Value.M`. Values of one
//! filter are ORed, filters are ANDed, and values may use `*` and `?`.

/// One filter from a describe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

/// Whether `text` matches an EC2 filter value, where `*` matches any run of
/// characters and `?` any one character (case-sensitive, as AWS).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The values a resource has for one filter name; `None` means the filter
/// name is not one this resource type knows.
pub type FieldValues = Option<Vec<String>>;

/// Whether one resource passes every filter. `fields` answers a filter name
/// with the resource's values for it (several, for list-valued fields).
pub fn matches_all(
    filters: &[Filter],
    fields: impl Fn(&str) -> FieldValues,
) -> Result<bool, String> {
    for f in filters {
        let values = fields(&f.name).ok_or_else(|| f.name.clone())?;
        let hit = f
            .values
            .iter()
            .any(|pat| values.iter().any(|v| wildcard_match(pat, v)));
        if !hit {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("vpc-*", "vpc-123"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "abbc"));
        assert!(wildcard_match("*b*d", "abcd"));
        assert!(!wildcard_match("*b*d", "abce"));
        assert!(wildcard_match("10.0.*", "10.0.1.0/24"));
        assert!(!wildcard_match("Vpc", "vpc"));
    }

    #[test]
    fn and_of_ors() {
        let filters = vec![
            Filter {
                name: "state".into(),
                values: vec!["pending".into(), "available".into()],
            },
            Filter {
                name: "tag:Name".into(),
                values: vec!["web*".into()],
            },
        ];
        let fields = |name: &str| -> FieldValues {
            match name {
                "state" => Some(vec!["available".into()]),
                "tag:Name" => Some(vec!["web-1".into()]),
                _ => None,
            }
        };
        assert_eq!(matches_all(&filters, fields), Ok(true));
        let none = |name: &str| -> FieldValues {
            match name {
                "state" => Some(vec!["available".into()]),
                "tag:Name" => Some(vec![]),
                _ => None,
            }
        };
        assert_eq!(matches_all(&filters, none), Ok(false));
        let bad = vec![Filter {
            name: "colour".into(),
            values: vec!["x".into()],
        }];
        assert_eq!(matches_all(&bad, fields), Err("colour".to_string()));
    }
}
