//! URL routing with Django's path syntax, as Channels' `URLRouter` does it.
//!
//! A pattern such as `ws/<room_name>/` or `ws/<uuid:room>/` is matched against
//! the whole percent-decoded request path with its leading `/` removed. The
//! converters are Django's: `str` (the default: one or more characters other
//! than `/`), `int`, `slug`, `uuid` and `path` (anything, `/` included).

/// One configured route.
#[derive(Debug, Clone)]
pub struct Route {
    pattern: String,
    parts: Vec<Part>,
    consumer: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Capture { name: String, converter: Converter },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converter {
    Str,
    Int,
    Slug,
    Uuid,
    Path,
}

/// A route pattern that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// `<` without `>`.
    #[error("unclosed `<`")]
    Unclosed,
    /// A converter other than str, int, slug, uuid, path.
    #[error("unknown converter {0:?} (use str, int, slug, uuid or path)")]
    UnknownConverter(String),
    /// A capture name that is not an identifier.
    #[error("{0:?} is not a valid capture name")]
    BadName(String),
    /// The same name captured twice.
    #[error("{0:?} is captured twice")]
    Duplicate(String),
    /// A pattern starting with `/` can never match (Django's rule).
    #[error(
        "a pattern must not start with `/` (the leading slash of the path is removed before matching)"
    )]
    LeadingSlash,
}

/// A match: which consumer, and the captured url kwargs in pattern order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'r> {
    /// The consumer's name.
    pub consumer: &'r str,
    /// `(name, value)` pairs.
    pub kwargs: Vec<(String, String)>,
}

impl Route {
    /// Compiles a pattern for a consumer.
    pub fn parse(pattern: &str, consumer: &str) -> Result<Self, RouteError> {
        if pattern.starts_with('/') {
            return Err(RouteError::LeadingSlash);
        }
        let mut parts = Vec::new();
        let mut rest = pattern;
        let mut names: Vec<String> = Vec::new();
        while let Some(open) = rest.find('<') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..].find('>').ok_or(RouteError::Unclosed)? + open;
            let inner = &rest[open + 1..close];
            let (converter, name) = match inner.split_once(':') {
                Some((converter, name)) => (converter, name),
                None => ("str", inner),
            };
            let converter = match converter {
                "str" => Converter::Str,
                "int" => Converter::Int,
                "slug" => Converter::Slug,
                "uuid" => Converter::Uuid,
                "path" => Converter::Path,
                other => return Err(RouteError::UnknownConverter(other.to_string())),
            };
            let valid_name = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(RouteError::BadName(name.to_string()));
            }
            if names.iter().any(|seen| seen == name) {
                return Err(RouteError::Duplicate(name.to_string()));
            }
            names.push(name.to_string());
            parts.push(Part::Capture {
                name: name.to_string(),
                converter,
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self {
            pattern: pattern.to_string(),
            parts,
            consumer: consumer.to_string(),
        })
    }

    /// The pattern as configured.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Matches a decoded request path (with its leading `/`).
    pub fn matches(&self, path: &str) -> Option<RouteMatch<'_>> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let mut kwargs = Vec::new();
        if match_parts(&self.parts, path, &mut kwargs) {
            Some(RouteMatch {
                consumer: &self.consumer,
                kwargs,
            })
        } else {
            None
        }
    }
}

/// Finds the first route that matches.
pub fn resolve<'r>(routes: &'r [Route], path: &str) -> Option<RouteMatch<'r>> {
    routes.iter().find_map(|route| route.matches(path))
}

fn match_parts(parts: &[Part], path: &str, kwargs: &mut Vec<(String, String)>) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return path.is_empty();
    };
    match first {
        Part::Literal(literal) => path
            .strip_prefix(literal.as_str())
            .is_some_and(|path| match_parts(rest, path, kwargs)),
        Part::Capture { name, converter } => {
            // Try the longest candidate first, as a greedy regex would.
            let mut ends: Vec<usize> = path
                .char_indices()
                .map(|(at, c)| at + c.len_utf8())
                .collect();
            ends.reverse();
            for end in ends {
                let value = &path[..end];
                if !converter.accepts(value) {
                    continue;
                }
                kwargs.push((name.clone(), value.to_string()));
                if match_parts(rest, &path[end..], kwargs) {
                    return true;
                }
                kwargs.pop();
            }
            false
        }
    }
}

impl Converter {
    fn accepts(self, value: &str) -> bool {
        if value.is_empty() {
            return false;
        }
        match self {
            Converter::Str => !value.contains('/'),
            Converter::Int => value.bytes().all(|b| b.is_ascii_digit()),
            Converter::Slug => value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            Converter::Uuid => {
                value.len() == 36
                    && value.bytes().enumerate().all(|(at, b)| match at {
                        8 | 13 | 18 | 23 => b == b'-',
                        _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
                    })
            }
            Converter::Path => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kwargs(route: &Route, path: &str) -> Option<Vec<(String, String)>> {
        route.matches(path).map(|m| m.kwargs)
    }

    fn pair(name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), value.to_string())]
    }

    #[test]
    fn the_reference_route() {
        let route = Route::parse("ws/<room_name>/", "chat").unwrap();
        let room = "22de0f4f-c84e-47be-889c-d61b856492bd";
        assert_eq!(
            kwargs(&route, &format!("/ws/{room}/")),
            Some(pair("room_name", room))
        );
        assert_eq!(kwargs(&route, "/ws/a/b/"), None);
        assert_eq!(kwargs(&route, "/ws//"), None);
        assert_eq!(kwargs(&route, "/ws/abc"), None);
        assert_eq!(kwargs(&route, "/ws/abc/extra"), None);
        assert_eq!(kwargs(&route, "/other/abc/"), None);
        assert_eq!(route.matches("/ws/x/").unwrap().consumer, "chat");
    }

    #[test]
    fn converters() {
        let int = Route::parse("n/<int:n>/", "c").unwrap();
        assert_eq!(kwargs(&int, "/n/42/"), Some(pair("n", "42")));
        assert_eq!(kwargs(&int, "/n/4x/"), None);
        let slug = Route::parse("s/<slug:s>", "c").unwrap();
        assert_eq!(kwargs(&slug, "/s/a-b_c"), Some(pair("s", "a-b_c")));
        assert_eq!(kwargs(&slug, "/s/a.b"), None);
        let uuid = Route::parse("u/<uuid:u>/", "c").unwrap();
        assert!(kwargs(&uuid, "/u/22de0f4f-c84e-47be-889c-d61b856492bd/").is_some());
        assert_eq!(kwargs(&uuid, "/u/22de0f4fc84e47be889cd61b856492bd/"), None);
        let path = Route::parse("files/<path:p>/end", "c").unwrap();
        assert_eq!(kwargs(&path, "/files/a/b/c/end"), Some(pair("p", "a/b/c")));
        let two = Route::parse("r/<str:a>-<int:b>/", "c").unwrap();
        assert_eq!(
            kwargs(&two, "/r/x-y-7/"),
            Some(vec![("a".into(), "x-y".into()), ("b".into(), "7".into())])
        );
    }

    #[test]
    fn bad_patterns_are_named() {
        assert_eq!(
            Route::parse("ws/<room", "c").unwrap_err(),
            RouteError::Unclosed
        );
        assert_eq!(
            Route::parse("ws/<float:x>/", "c").unwrap_err(),
            RouteError::UnknownConverter("float".into())
        );
        assert_eq!(
            Route::parse("ws/<1x>/", "c").unwrap_err(),
            RouteError::BadName("1x".into())
        );
        assert_eq!(
            Route::parse("<a>/<a>", "c").unwrap_err(),
            RouteError::Duplicate("a".into())
        );
        assert_eq!(
            Route::parse("/ws/", "c").unwrap_err(),
            RouteError::LeadingSlash
        );
    }

    #[test]
    fn first_match_wins() {
        let routes = vec![
            Route::parse("ws/admin/", "admin").unwrap(),
            Route::parse("ws/<room_name>/", "chat").unwrap(),
        ];
        assert_eq!(resolve(&routes, "/ws/admin/").unwrap().consumer, "admin");
        assert_eq!(resolve(&routes, "/ws/other/").unwrap().consumer, "chat");
        assert!(resolve(&routes, "/nope").is_none());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any path is matched or not without panicking, and a match of the
        /// chat route captures exactly the one segment.
        #[test]
        fn arbitrary_paths(path in "/?[a-z/<>:%.é-]{0,60}") {
            let route = Route::parse("ws/<room_name>/", "chat").unwrap();
            if let Some(found) = route.matches(&path) {
                prop_assert_eq!(found.kwargs.len(), 1);
                prop_assert!(!found.kwargs[0].1.contains('/'));
                prop_assert_eq!(format!("/ws/{}/", found.kwargs[0].1), if path.starts_with('/') { path.clone() } else { format!("/{path}") });
            }
        }

        /// Any pattern text parses or is refused with a reason, never a panic.
        #[test]
        fn arbitrary_patterns(pattern in "[a-z/<>:_0-9]{0,40}") {
            let _ = Route::parse(&pattern, "c");
        }
    }
}
