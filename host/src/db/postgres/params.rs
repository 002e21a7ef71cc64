//! One query text for both backends: guests write SQLite's numbered
//! parameters, `?1`, `?2`..., and the host rewrites them to PostgreSQL's
//! `$1`, `$2`... before preparing.
//!
//! Only parameters are touched: text inside string literals (`'...'`,
//! `E'...'` with its backslash escapes), quoted identifiers (`"..."`),
//! dollar-quoted strings (`$tag$...$tag$`) and comments (`-- ...`, nested
//! `/* ... */`) is copied as it is. A bare `?` takes the number after the
//! largest used so far, as in SQLite. The price: PostgreSQL's `?`, `?|` and
//! `?&` jsonb operators cannot be written (use `jsonb_exists`,
//! `jsonb_exists_any`, `jsonb_exists_all`).

use std::borrow::Cow;

/// PostgreSQL's largest parameter number.
const MAX_PARAMETER: u32 = 65_535;

/// `sql` with `?N` (and bare `?`) written as `$N`; borrowed when it has none.
pub fn rewrite(sql: &str) -> Result<Cow<'_, str>, String> {
    let bytes = sql.as_bytes();
    if !bytes.contains(&b'?') {
        return Ok(Cow::Borrowed(sql));
    }
    let mut out = String::with_capacity(sql.len() + 8);
    // Bytes up to `copied` are in `out`. Only ASCII bytes are matched, so
    // every cut falls between UTF-8 characters.
    let mut copied = 0;
    let mut largest = 0u32;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'\'' => {
                let escapes = at > 0
                    && matches!(bytes[at - 1], b'e' | b'E')
                    && (at < 2 || !is_identifier_byte(bytes[at - 2]));
                at = skip_string(bytes, at + 1, escapes);
            }
            b'"' => at = skip_quoted_identifier(bytes, at + 1),
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                at = bytes[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |n| at + n + 1);
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => at = skip_block_comment(bytes, at + 2),
            b'$' if at == 0 || !is_identifier_byte(bytes[at - 1]) => {
                at = match dollar_tag(bytes, at) {
                    Some(tag) => skip_dollar_quoted(bytes, at + tag.len(), tag),
                    None => at + 1,
                };
            }
            b'?' => {
                let digits = bytes[at + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let number = if digits == 0 {
                    largest + 1
                } else {
                    sql[at + 1..at + 1 + digits]
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_PARAMETER).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "?{} is not a parameter: number them from ?1 to ?{MAX_PARAMETER}",
                                &sql[at + 1..at + 1 + digits]
                            )
                        })?
                };
                largest = largest.max(number);
                out.push_str(&sql[copied..at]);
                out.push('$');
                out.push_str(&number.to_string());
                at += 1 + digits;
                copied = at;
            }
            _ => at += 1,
        }
    }
    out.push_str(&sql[copied..]);
    Ok(Cow::Owned(out))
}

/// Letters, digits, `_`, `$` and every non-ASCII byte: what an identifier
/// (or a number) is made of, so `e'` in `some'` is no E-string and `$` in
/// `a$b` starts no dollar quote.
fn is_identifier_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// Past the closing quote of a string literal whose body starts at `at`.
fn skip_string(bytes: &[u8], mut at: usize, escapes: bool) -> usize {
    while at < bytes.len() {
        match bytes[at] {
            b'\\' if escapes => at += 2,
            b'\'' if bytes.get(at + 1) == Some(&b'\'') => at += 2,
            b'\'' => return at + 1,
            _ => at += 1,
        }
    }
    bytes.len()
}

fn skip_quoted_identifier(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() {
        match bytes[at] {
            b'"' if bytes.get(at + 1) == Some(&b'"') => at += 2,
            b'"' => return at + 1,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// Block comments nest in PostgreSQL.
fn skip_block_comment(bytes: &[u8], mut at: usize) -> usize {
    let mut depth = 1;
    while at < bytes.len() {
        if bytes[at] == b'*' && bytes.get(at + 1) == Some(&b'/') {
            depth -= 1;
            at += 2;
            if depth == 0 {
                return at;
            }
        } else if bytes[at] == b'/' && bytes.get(at + 1) == Some(&b'*') {
            depth += 1;
            at += 2;
        } else {
            at += 1;
        }
    }
    bytes.len()
}

/// The tag (`$$`, `$body$`) starting at `at`, if one does: `$`, an
/// identifier not starting with a digit (or nothing), `$`. `$1` is a
/// parameter, not a tag.
fn dollar_tag(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let name = bytes[at + 1..]
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
        .count();
    if name > 0 && bytes[at + 1].is_ascii_digit() {
        return None;
    }
    (bytes.get(at + 1 + name) == Some(&b'$')).then(|| &bytes[at..at + name + 2])
}

fn skip_dollar_quoted(bytes: &[u8], at: usize, tag: &[u8]) -> usize {
    bytes[at..]
        .windows(tag.len())
        .position(|window| window == tag)
        .map_or(bytes.len(), |n| at + n + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(sql: &str) -> String {
        rewrite(sql).unwrap().into_owned()
    }

    #[test]
    fn numbered_and_bare_parameters() {
        assert_eq!(
            pg("SELECT user_id FROM chat_conversation_users WHERE conversation_id = ?1"),
            "SELECT user_id FROM chat_conversation_users WHERE conversation_id = $1"
        );
        assert_eq!(pg("SELECT ?2, ?1, ?"), "SELECT $2, $1, $3");
        assert_eq!(pg("SELECT ?, ?, ?1"), "SELECT $1, $2, $1");
        assert_eq!(pg("SELECT ?12+?3"), "SELECT $12+$3");
        assert!(matches!(rewrite("SELECT 1"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn literals_identifiers_and_comments_are_left_alone() {
        assert_eq!(pg("SELECT '?1', ?1"), "SELECT '?1', $1");
        assert_eq!(pg("SELECT 'it''s ?', ?"), "SELECT 'it''s ?', $1");
        assert_eq!(pg(r"SELECT E'\' ?1', ?1"), r"SELECT E'\' ?1', $1");
        // Not an E-string: a backslash is an ordinary character.
        assert_eq!(pg(r"SELECT '\', ?1"), r"SELECT '\', $1");
        assert_eq!(pg(r"SELECT some'\', ?1"), r"SELECT some'\', $1");
        assert_eq!(
            pg(r#"SELECT "a?""b" FROM t WHERE x = ?1"#),
            r#"SELECT "a?""b" FROM t WHERE x = $1"#
        );
        assert_eq!(pg("SELECT 1 -- why?\n, ?1"), "SELECT 1 -- why?\n, $1");
        assert_eq!(
            pg("SELECT /* a /* ? */ ? */ ?1"),
            "SELECT /* a /* ? */ ? */ $1"
        );
        assert_eq!(
            pg("SELECT $$?$$, $x$ ?1 $$ $x$, ?1"),
            "SELECT $$?$$, $x$ ?1 $$ $x$, $1"
        );
        // `$1` is a parameter already, and `a$b` an identifier.
        assert_eq!(pg("SELECT $1, a$b$ ?1"), "SELECT $1, a$b$ $1");
        // Unterminated text: copied as it is; PostgreSQL says what is wrong.
        assert_eq!(pg("SELECT ?1, 'oops ?2"), "SELECT $1, 'oops ?2");
        assert_eq!(pg("SELECT 'é?', ?1 -- ü"), "SELECT 'é?', $1 -- ü");
    }

    #[test]
    fn impossible_numbers_are_refused() {
        assert!(
            rewrite("SELECT ?0")
                .unwrap_err()
                .contains("?0 is not a parameter")
        );
        assert!(rewrite("SELECT ?99999999999").is_err());
    }
}
