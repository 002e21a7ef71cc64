//! UUIDs in the two spellings the chat meets: hyphenated (clients, tokens)
//! and 32 lowercase hex digits (Django's storage in SQLite).

/// Returns the 32-lowercase-hex form of a UUID written hyphenated
/// (`8-4-4-4-12`) or as 32 hex digits, in either case; `None` if it is not one.
pub fn to_hex(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let digits: Vec<u8> = match bytes.len() {
        32 => bytes.to_vec(),
        36 => {
            if [8, 13, 18, 23].iter().any(|&at| bytes[at] != b'-') {
                return None;
            }
            bytes.iter().copied().filter(|&b| b != b'-').collect()
        }
        _ => return None,
    };
    if digits.len() != 32 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(
        digits
            .iter()
            .map(|b| b.to_ascii_lowercase() as char)
            .collect(),
    )
}

/// Returns the hyphenated form of a UUID given as 32 hex digits (other input
/// is returned unchanged).
pub fn hyphenate(hex: &str) -> String {
    if hex.len() != 32 || !hex.is_ascii() {
        return hex.to_string();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_name_the_same_uuid() {
        let hyphenated = "9F5BA441-036f-4f39-9ea6-258e3206e909";
        assert_eq!(
            to_hex(hyphenated).unwrap(),
            "9f5ba441036f4f399ea6258e3206e909"
        );
        assert_eq!(
            to_hex("9f5ba441036f4f399ea6258e3206e909").unwrap(),
            "9f5ba441036f4f399ea6258e3206e909"
        );
        assert_eq!(
            hyphenate("9f5ba441036f4f399ea6258e3206e909"),
            "9f5ba441-036f-4f39-9ea6-258e3206e909"
        );
    }

    #[test]
    fn rejects_what_is_not_a_uuid() {
        for bad in [
            "",
            "room",
            "9f5ba441-036f-4f39-9ea6-258e3206e90",
            "9f5ba441x036f-4f39-9ea6-258e3206e909",
            "zf5ba441036f4f399ea6258e3206e909",
            "' OR 1=1 --",
        ] {
            assert_eq!(to_hex(bad), None, "{bad}");
        }
    }
}
