//! Topic names and topic filters: validation [MQTT-4.7] and matching.
//!
//! Valid filters: `a/b`, `a/+/c`, `a/#`, `#`, `+`, `/`, `+/+`, `$share/g/a/#`.
//! Invalid filters: `a/#/b` (`#` not last), `a+` or `a/b#` (wildcard sharing a level), empty.
//! Names never hold `+` or `#`. Filters starting with a wildcard do not match names starting
//! with `$` [MQTT-4.7.2-1].

/// Why a topic name or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Zero length [MQTT-4.7.3-1].
    Empty,
    /// A topic name holds `+` or `#` [MQTT-3.3.2-2].
    WildcardInName,
    /// `+` or `#` shares a level with other characters, or `#` is not last [MQTT-4.7.1-1..3].
    MisplacedWildcard,
    /// Holds U+0000 [MQTT-4.7.3-2].
    NullCharacter,
    /// A `$share/` filter with an empty or wildcard group name, or no filter after it [MQTT-4.8.2-1].
    BadSharedSubscription,
}

/// Checks a topic name as carried in PUBLISH or a Will (not the empty aliased form).
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a plain (non-shared) topic filter.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    if filter.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            _ if level.contains(['+', '#']) => return Err(TopicError::MisplacedWildcard),
            _ => {}
        }
    }
    Ok(())
}

/// A filter split into its shared-subscription group (if any) and the filter proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFilter<'a> {
    /// The Share Name of a `$share/{group}/{filter}` subscription.
    pub share_group: Option<&'a str>,
    /// The topic filter that is matched against topic names.
    pub filter: &'a str,
}

/// Validates a filter as sent in SUBSCRIBE/UNSUBSCRIBE, splitting off a `$share/` group.
pub fn parse_filter(filter: &str) -> Result<ParsedFilter<'_>, TopicError> {
    if let Some(rest) = filter.strip_prefix("$share/") {
        let (group, inner) = rest
            .split_once('/')
            .ok_or(TopicError::BadSharedSubscription)?;
        if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
            return Err(TopicError::BadSharedSubscription);
        }
        validate_filter(inner)?;
        Ok(ParsedFilter {
            share_group: Some(group),
            filter: inner,
        })
    } else if filter == "$share" {
        Err(TopicError::BadSharedSubscription)
    } else {
        validate_filter(filter)?;
        Ok(ParsedFilter {
            share_group: None,
            filter,
        })
    }
}

/// True if the valid topic name `name` matches the valid filter `filter`.
pub fn matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut n = name.split('/');
    loop {
        match (f.next(), n.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(nl)) if fl == nl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_grammar() {
        for ok in [
            "a/b",
            "a/+/c",
            "a/#",
            "#",
            "+",
            "/",
            "+/+",
            "/+",
            "a//b",
            "sport/tennis/#",
        ] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["a/#/b", "a+", "a/b#", "#/", "++", ""] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_refuse_wildcards() {
        assert_eq!(validate_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name(""), Err(TopicError::Empty));
        assert_eq!(validate_name("a\0b"), Err(TopicError::NullCharacter));
        assert_eq!(validate_name("/"), Ok(()));
    }

    #[test]
    fn shared_filters_split() {
        let p = parse_filter("$share/g1/a/+").unwrap();
        assert_eq!(p.share_group, Some("g1"));
        assert_eq!(p.filter, "a/+");
        assert!(parse_filter("$share//a").is_err());
        assert!(parse_filter("$share/g").is_err());
        assert!(parse_filter("$share/g+/a").is_err());
        assert_eq!(parse_filter("$shared/a").unwrap().share_group, None);
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        assert!(matches("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(matches(
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking"
        ));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "a/b/c"));
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        // [MQTT-4.7.2-1]
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }
}
