//! URL routing with Django's path syntax, as Channels' `URLRouter` does it.
//!
//! A pattern such as `ws/<room_name>/` or `ws/<uuid:room>/` is matched against
//! the whole percent-decoded request path with its leading `/` removed. The
//! converters are Django's: `str` (the default: one or more characters other
//! than `/`), `int`, `slug`, `uuid` and `path` (anything, `/` included).
//!
//! Each pattern is compiled into a regular expression, as Django does, but
//! run by the `regex` crate, whose matching takes time linear in the path
//! whatever the pattern: a long path with many candidate splits costs no
//! more than a scan (a backtracking matcher took 184 ms on 60,000 bytes).
//! The captures are those a greedy backtracking match would give.

use regex::Regex;

use crate::config::RouteConfig;

/// One configured route.
#[derive(Debug, Clone)]
pub struct Route {
    regex: Regex,
    /// Capture names, in the pattern's order (group `n + 1` is `names[n]`).
    names: Vec<String>,
    consumer: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converter {
    Str,
    Int,
    Slug,
    Uuid,
    Path,
}

impl Converter {
    fn parse(name: &str) -> Result<Self, RouteError> {
        Ok(match name {
            "str" => Converter::Str,
            "int" => Converter::Int,
            "slug" => Converter::Slug,
            "uuid" => Converter::Uuid,
            "path" => Converter::Path,
            other => return Err(RouteError::UnknownConverter(other.to_string())),
        })
    }

    /// Django's regular expression for the converter.
    fn regex(self) -> &'static str {
        match self {
            Converter::Str => "[^/]+",
            Converter::Int => "[0-9]+",
            Converter::Slug => "[-a-zA-Z0-9_]+",
            Converter::Uuid => "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            Converter::Path => ".+",
        }
    }
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
    /// The pattern is too large to compile.
    #[error("the pattern is too large")]
    TooLarge,
}

/// A configured route that cannot be compiled.
#[derive(Debug, thiserror::Error)]
#[error("route {path:?}: {source}")]
pub struct RoutesError {
    /// The pattern as configured.
    pub path: String,
    /// Why.
    pub source: RouteError,
}

/// Compiles the configured routes, in order.
pub fn compile(routes: &[RouteConfig]) -> Result<Vec<Route>, RoutesError> {
    routes
        .iter()
        .map(|route| {
            Route::parse(&route.path, &route.consumer).map_err(|source| RoutesError {
                path: route.path.clone(),
                source,
            })
        })
        .collect()
}

/// A match: which consumer, and the captured url kwargs in pattern order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'r> {
    /// The consumer's name.
    pub consumer: &'r str,
    /// `(name, value)` pairs.
    pub kwargs: Vec<(String, String)>,
}

fn valid_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Route {
    /// Compiles a pattern for a consumer.
    pub fn parse(pattern: &str, consumer: &str) -> Result<Self, RouteError> {
        if pattern.starts_with('/') {
            return Err(RouteError::LeadingSlash);
        }
        let mut regex = String::from(r"\A");
        let mut names: Vec<String> = Vec::new();
        let mut rest = pattern;
        while let Some(open) = rest.find('<') {
            regex.push_str(&regex::escape(&rest[..open]));
            let close = rest[open..].find('>').ok_or(RouteError::Unclosed)? + open;
            let inner = &rest[open + 1..close];
            let (converter, name) = inner.split_once(':').unwrap_or(("str", inner));
            let converter = Converter::parse(converter)?;
            if !valid_name(name) {
                return Err(RouteError::BadName(name.to_string()));
            }
            if names.iter().any(|seen| seen == name) {
                return Err(RouteError::Duplicate(name.to_string()));
            }
            names.push(name.to_string());
            regex.push('(');
            regex.push_str(converter.regex());
            regex.push(')');
            rest = &rest[close + 1..];
        }
        regex.push_str(&regex::escape(rest));
        regex.push_str(r"\z");
        let regex = Regex::new(&regex).map_err(|_| RouteError::TooLarge)?;
        Ok(Self {
            regex,
            names,
            consumer: consumer.to_string(),
        })
    }

    /// Matches a decoded request path (with its leading `/`).
    pub fn matches(&self, path: &str) -> Option<RouteMatch<'_>> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let captures = self.regex.captures(path)?;
        let kwargs = self
            .names
            .iter()
            .enumerate()
            .map(|(index, name)| (name.clone(), captures[index + 1].to_string()))
            .collect();
        Some(RouteMatch {
            consumer: &self.consumer,
            kwargs,
        })
    }
}

/// Finds the first route that matches.
pub fn resolve<'r>(routes: &'r [Route], path: &str) -> Option<RouteMatch<'r>> {
    routes.iter().find_map(|route| route.matches(path))
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
    fn long_paths_with_many_splits_match_in_one_scan() {
        // Three captures separated by one character: a backtracking matcher
        // tries every split of every capture (cubic); this is one scan.
        let route = Route::parse("r/<a>-<b>-<c>/", "c").unwrap();
        let long = format!("/r/{}/", "a-".repeat(20_000));
        let found = route.matches(&long).unwrap();
        assert_eq!(found.kwargs.len(), 3);
        assert!(found.kwargs.iter().all(|(_, value)| !value.is_empty()));
        let no_match = format!("/r/{}x", "a-".repeat(20_000));
        assert!(route.matches(&no_match).is_none());
        let found = route.matches("/r/x-y-z-7/").unwrap();
        assert_eq!(
            found.kwargs,
            vec![
                ("a".into(), "x-y".into()),
                ("b".into(), "z".into()),
                ("c".into(), "7".into())
            ]
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
